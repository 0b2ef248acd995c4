//! `trellis nats permissions`.

use std::process::ExitCode;

use trellis_lattice::permissions::{NatsRole, permissions};

use crate::args::{Global, NatsCommand, NatsRoleArg, Output};
use crate::output::print_json;

pub fn run(g: &Global, cmd: NatsCommand) -> anyhow::Result<ExitCode> {
    let NatsCommand::Permissions { role, app_subjects } = cmd;
    trellis_lattice::subject::validate_id("lattice", &g.lattice)?;
    let role = match role {
        NatsRoleArg::Host => NatsRole::Host,
        NatsRoleArg::Provider => NatsRole::Provider,
        NatsRoleArg::Operator => NatsRole::Operator,
        NatsRoleArg::Viewer => NatsRole::Viewer,
    };
    if !app_subjects.is_empty() && role != NatsRole::Provider {
        anyhow::bail!("--app-subject applies to --role provider only");
    }
    if let Some(bad) = app_subjects
        .iter()
        .find(|s| s.starts_with("trellis.") || s.starts_with('$') || s.starts_with("_INBOX"))
    {
        anyhow::bail!(
            "--app-subject {bad}: the lattice's own subjects, the server's APIs and inboxes \
             cannot be application subjects"
        );
    }
    let permissions = permissions(role, &g.lattice, &app_subjects);
    match g.output {
        Output::Json => print_json(&serde_json::json!({
            "publish": { "allow": permissions.publish },
            "subscribe": { "allow": permissions.subscribe },
            "allow_responses": permissions.allow_responses,
        })),
        Output::Text => println!("{}", permissions.to_conf()),
    }
    Ok(ExitCode::SUCCESS)
}
