//! `trellis nats permissions`.

use std::process::ExitCode;

use trellis_lattice::permissions::{NatsRole, permissions};

use crate::args::{Global, NatsCommand, NatsRoleArg, Output};
use crate::output::print_json;

pub fn run(g: &Global, cmd: NatsCommand) -> anyhow::Result<ExitCode> {
    let NatsCommand::Permissions { role } = cmd;
    trellis_lattice::subject::validate_id("lattice", &g.lattice)?;
    let role = match role {
        NatsRoleArg::Host => NatsRole::Host,
        NatsRoleArg::Operator => NatsRole::Operator,
        NatsRoleArg::Viewer => NatsRole::Viewer,
    };
    let permissions = permissions(role, &g.lattice);
    match g.output {
        Output::Json => print_json(&serde_json::json!({
            "publish": { "allow": permissions.publish },
            "subscribe": { "allow": permissions.subscribe },
        })),
        Output::Text => println!("{}", permissions.to_conf()),
    }
    Ok(ExitCode::SUCCESS)
}
