//! The CLI as people use it: shell completions, man pages, contexts.

use std::path::Path;
use std::process::Output;

use tokio::process::Command;
use trellis_tests::bin;

/// Runs `trellis` with `args` and nothing from the test's environment that would configure it.
async fn trellis(args: &[&str], home: &Path) -> Output {
    Command::new(bin("trellis"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .output()
        .await
        .expect("run trellis")
}

fn stdout(out: &Output) -> String {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn bash_completes_commands_and_their_subcommands_from_the_generated_script() {
    let home = tempfile::tempdir().unwrap();
    let script = home.path().join("trellis.bash");
    std::fs::write(&script, stdout(&trellis(&["completions", "bash"], home.path()).await)).unwrap();
    let complete = |words: &str| {
        let words = words.to_owned();
        let script = script.clone();
        async move {
            // What bash does on <Tab>: the words so far, the one being completed last.
            // Bash calls the function with the command, the word under the cursor and the one
            // before it.
            let split: Vec<&str> = words.split(' ').collect();
            let (cword, cur, prev) =
                (split.len() - 1, split[split.len() - 1], split[split.len() - 2]);
            let program = format!(
                "source {}; COMP_WORDS=({words} ''); COMP_WORDS[{cword}]='{cur}'; \
                 COMP_CWORD={cword}; COMP_LINE='{words}'; COMP_POINT=${{#COMP_LINE}}; \
                 _trellis trellis '{cur}' '{prev}'; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
                script.display()
            );
            let out = Command::new("bash").args(["-c", &program]).output().await.unwrap();
            String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect::<Vec<_>>()
        }
    };
    assert_eq!(complete("trellis ap").await, ["app"]);
    let app = complete("trellis app ").await;
    for sub in ["deploy", "status", "rollback", "undeploy"] {
        assert!(app.iter().any(|w| w == sub), "`trellis app <Tab>` offers {sub}: {app:?}");
    }
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let script = stdout(&trellis(&["completions", shell], home.path()).await);
        assert!(script.contains("deploy"), "{shell} completes subcommands too");
    }
    let refused = trellis(&["completions", "tcsh"], home.path()).await;
    // A usage error is 64 (EX_USAGE): 2 means "accepted but not fully placed" (docs/cli.md).
    assert_eq!(refused.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("possible values"));
}

#[tokio::test]
async fn man_pages_are_written_for_every_command() {
    let home = tempfile::tempdir().unwrap();
    let page = stdout(&trellis(&["man"], home.path()).await);
    assert!(page.contains(".TH trellis 1"), "{page}");
    let dir = home.path().join("man");
    stdout(&trellis(&["man", "--out-dir", dir.to_str().unwrap()], home.path()).await);
    for name in ["trellis.1", "trellis-app-deploy.1", "trellis-get-hosts.1", "trellis-host.1"] {
        let page =
            std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(page.contains(".TH"), "{name} is a man page");
    }
    let deploy = std::fs::read_to_string(dir.join("trellis-app-deploy.1")).unwrap();
    assert!(deploy.contains("manifest"), "the page says what the command takes: {deploy}");
}

#[tokio::test]
async fn a_selected_context_picks_the_lattice_and_flags_and_the_environment_still_win() {
    let lattice = crate::Lattice::new("ctx").await;
    let _host = lattice.trellis.host("h", &[]).await;
    let home = tempfile::tempdir().unwrap();
    let url = lattice.nats.url();
    let names = |out: Output| -> Vec<String> {
        let hosts: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
        let hosts = hosts.as_array().cloned().unwrap_or_default();
        hosts.iter().filter_map(|h| h["name"].as_str().map(str::to_owned)).collect()
    };

    let saved = trellis(
        &["context", "add", "lab", "--nats-url", &url, "--lattice", "ctx", "--select"],
        home.path(),
    )
    .await;
    assert!(stdout(&saved).contains("selected"));
    let file = home.path().join(".config/trellis/contexts/lab.json");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&file).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "only its owner reads a context");
    assert_eq!(stdout(&trellis(&["context", "ls"], home.path()).await), "* lab\n");

    // The context supplies the server and the lattice.
    let get = ["get", "hosts", "--output", "json"];
    assert_eq!(names(trellis(&get, home.path()).await), ["h"]);
    // A flag beats it, and so does the environment.
    let other = trellis(&[&["--lattice", "elsewhere"], &get[..]].concat(), home.path()).await;
    assert_eq!(names(other), Vec::<String>::new());
    let env = Command::new(bin("trellis"))
        .args(get)
        .env_clear()
        .env("HOME", home.path())
        .env("TRELLIS_LATTICE", "elsewhere")
        .output()
        .await
        .unwrap();
    assert_eq!(names(env), Vec::<String>::new());

    // A context that is not there is named, with what to do.
    let missing = trellis(&["--context", "nope", "get", "hosts"], home.path()).await;
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(!missing.status.success() && err.contains("trellis context ls"), "{err}");
    // A server that is not there is named with the context it came from.
    stdout(
        &trellis(&["context", "add", "gone", "--nats-url", "nats://127.0.0.1:1"], home.path())
            .await,
    );
    let gone = trellis(&["--context", "gone", "get", "hosts"], home.path()).await;
    let err = String::from_utf8_lossy(&gone.stderr);
    assert!(err.contains("with context `gone`") && err.contains("nats://127.0.0.1:1"), "{err}");

    stdout(&trellis(&["context", "rm", "lab"], home.path()).await);
    assert_eq!(stdout(&trellis(&["context", "ls"], home.path()).await), "  gone\n");
}

#[tokio::test]
async fn progress_shows_on_a_terminal_and_nowhere_else() {
    let lattice = crate::Lattice::new("progress").await;
    let t = &lattice.trellis;
    let args = ["--allow-unsigned", "--scheduler", "--scheduler-lease=2", "--label=role=worker"];
    let _s = t.host_with("s", &args.map(String::from)).await;
    let dir = tempfile::tempdir().unwrap();
    let manifest = |version: &str| {
        let hello = trellis_tests::component("http-hello");
        let yaml = format!(
            "name: shown\nversion: '{version}'\ncomponents:\n  - name: hello\n    source: {}\n    \
             replicas: 1\n    spread:\n      - name: w\n        requirements: {{role: worker}}\n",
            hello.display()
        );
        let path = dir.path().join(format!("v{version}.yaml"));
        std::fs::write(&path, yaml).unwrap();
        path.to_str().unwrap().to_owned()
    };

    // Not a terminal (a pipe, as in scripts and CI): the result, and no progress.
    let piped = t.cli(&["app", "deploy", &manifest("1")]).await;
    assert!(piped.status.success(), "{}", String::from_utf8_lossy(&piped.stderr));
    let stderr = String::from_utf8_lossy(&piped.stderr);
    assert!(!stderr.contains("waiting"), "no progress into a pipe: {stderr}");
    assert!(String::from_utf8_lossy(&piped.stdout).contains("deployed"));

    // A terminal (script(1) runs it on a pseudo-terminal): the spinner says what it waits for.
    let config = dir.path();
    let on_terminal = |args: String| async move {
        let command = format!("{} {args}", bin("trellis").display());
        let out = Command::new("script")
            .args(["-qec", &command, "/dev/null"])
            .env("TRELLIS_NATS_URL", &t.nats_url)
            .env("TRELLIS_LATTICE", &t.lattice)
            .envs(t.env.iter().map(|(k, v)| (k, v)))
            .env("XDG_CONFIG_HOME", config)
            .env("TERM", "xterm")
            .output()
            .await
            .expect("script(1) runs");
        let screen = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{screen}");
        screen
    };
    let screen = on_terminal(format!("app deploy {}", manifest("2"))).await;
    assert!(screen.contains("shown 2: "), "progress on the terminal: {screen:?}");
    // Uploads too.
    let hello = trellis_tests::component("http-hello");
    let start = format!("start component {} --id also-shown", hello.display());
    let screen = on_terminal(start).await;
    assert!(screen.contains("uploading"), "upload progress on the terminal: {screen:?}");
    // And `--output json` shows none even there.
    let screen = on_terminal(format!("app deploy {} --output json", manifest("3"))).await;
    assert!(!screen.contains("shown 3: "), "{screen:?}");
}
