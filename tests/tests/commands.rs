//! The commands the README names exist and are listed by `make help`, so a
//! reader who tries one finds it.

use std::process::Command;

use analytics_tests::e2e::repo_root;

/// Every `make <target>` the README mentions.
fn readme_targets() -> Vec<String> {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).expect("README.md");
    let mut targets: Vec<String> = readme
        .split("make ")
        .skip(1)
        .filter_map(|rest| {
            let target: String = rest
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '-')
                .collect();
            // `make e2e`: the digit ends the scan above.
            if rest.starts_with("e2e") {
                Some("e2e".to_string())
            } else {
                Some(target).filter(|t| t.len() > 1)
            }
        })
        .collect();
    targets.sort();
    targets.dedup();
    targets
}

#[test]
fn make_help_lists_every_target_the_readme_mentions() {
    let output = match Command::new("make")
        .arg("help")
        .current_dir(repo_root())
        .output()
    {
        Ok(output) => output,
        Err(err) => {
            return analytics_tests::report_skipped(
                "make_help_lists_every_target_the_readme_mentions",
                &format!("make cannot run: {err}"),
            )
        }
    };
    assert!(output.status.success(), "make help failed");
    let help = String::from_utf8_lossy(&output.stdout);
    let targets = readme_targets();
    assert!(
        targets.len() >= 8,
        "targets found in the README: {targets:?}"
    );
    for target in targets {
        assert!(
            help.lines().any(
                |line| line.split_whitespace().nth(1) == Some(target.as_str())
                    || line.contains(&format!("| {target} "))
                    || line.contains(&format!(" {target} |"))
            ),
            "`make {target}` is in the README but not in `make help`:\n{help}"
        );
    }
}

/// `make dev` and `make test` check their prerequisites first: a Rust older
/// than the workspace's `rust-version` stops them with what to install.
#[test]
fn an_old_rust_is_named_before_anything_runs() {
    let dir = std::env::temp_dir().join(format!("old-rust-{}", analytics_tests::random_prefix()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let fake = dir.join("rustc");
    std::fs::write(&fake, "#!/bin/sh\necho 'rustc 1.80.0 (old)'\n").expect("fake rustc");
    let mut permissions = std::fs::metadata(&fake).expect("fake rustc").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o755);
    std::fs::set_permissions(&fake, permissions).expect("chmod");
    let path = format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let output = Command::new("bash")
        .arg("-c")
        .arg("source scripts/lib.sh && check_prerequisites dev")
        .current_dir(repo_root())
        .env("PATH", path)
        .output()
        .expect("run bash");
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    let rust_version = std::fs::read_to_string(repo_root().join("Cargo.toml"))
        .expect("Cargo.toml")
        .lines()
        .find_map(|l| {
            l.strip_prefix("rust-version = \"")
                .map(|v| v.trim_end_matches('"').to_string())
        })
        .expect("rust-version");
    assert!(
        stderr.contains(&format!("Rust {rust_version} or newer (found 1.80.0")),
        "{stderr}"
    );
}
