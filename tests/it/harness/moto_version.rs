// Included (`include!`) by tests/it/harness/moto.rs and by the unit tests of src/store/s3.rs, so
// both refuse an old moto with the same one line. No inner doc comment: include! takes items only.

/// `Err(one line saying what to install)` unless `python3`'s moto is 5.2.5 or newer: moto 5.2.1
/// answers CompleteMultipartUpload with an XML root the Rust SDK rejects, which otherwise shows up
/// as an SDK XML error deep inside a multipart upload test.
fn moto_version_check() -> Result<(), String> {
    let out = std::process::Command::new("python3")
        .args(["-c", "import moto; print(moto.__version__)"])
        .stderr(std::process::Stdio::null())
        .output();
    let version = match out {
        Ok(o) if o.status.success() => Some(String::from_utf8_lossy(&o.stdout).trim().to_string()),
        _ => None,
    };
    match moto_version_problem(version.as_deref()) {
        Some(line) => Err(line),
        None => Ok(()),
    }
}

/// The one line for `moto.__version__` (`None`: python3 cannot import moto), or `None` when it will do.
fn moto_version_problem(version: Option<&str>) -> Option<String> {
    const FIX: &str = "run scripts/test (it installs what is missing) or: python3 -m pip install 'moto[server]==5.2.5'";
    let Some(version) = version else {
        return Some(format!("moto is not installed for python3 (5.2.5 or newer needed): {FIX}"));
    };
    // "5.2.5", "5.2.6.dev0", "5.3.0rc1": the leading digits of the first three parts.
    let mut parts = version.split('.').map(|p| {
        p.chars().take_while(char::is_ascii_digit).collect::<String>().parse::<u32>().unwrap_or(0)
    });
    let have = (parts.next().unwrap_or(0), parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (have < (5, 2, 5)).then(|| format!("moto {version} is older than 5.2.5, which the tests need: {FIX}"))
}
