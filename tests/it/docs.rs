//! What the README, `--help` and the man page tell a user holds: the man page names only pages
//! that exist, and nothing points at files a user does not have.

use std::path::{Path, PathBuf};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn the_man_page_names_only_pages_that_exist() {
    let man = std::fs::read_to_string(root().join("man/drctl.1")).expect("man/drctl.1");
    // Every drctl page it refers to, as `drctl\-NAME(N)` or `\fBdrctl\-NAME\fR(N)`, is shipped in man/.
    let plain = man.replace("\\fB", "").replace("\\fR", "").replace("\\-", "-");
    let mut refs = Vec::new();
    for (i, _) in plain.match_indices("drctl") {
        let word: String =
            plain[i..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_').collect();
        if let Some(section) = plain[i + word.len()..].strip_prefix('(').and_then(|r| r.chars().next())
            && section.is_ascii_digit()
        {
            refs.push(format!("{word}.{section}"));
        }
    }
    for page in &refs {
        assert!(root().join("man").join(page).is_file(), "man/drctl.1 refers to {page}, which man/ does not have");
    }
    assert!(man.contains(".SH \"SEE ALSO\""), "a SEE ALSO section");
    assert!(man.contains("docs/reference.md"), "the man page points at the full reference");
}

#[test]
fn nothing_points_at_files_outside_the_repository() {
    let mut files = vec![root().join("README.md")];
    for dir in ["docs", "man", "runbooks", "completions", "src", "scripts"] {
        walk(&root().join(dir), &mut files);
    }
    for f in files {
        let Ok(text) = std::fs::read_to_string(&f) else { continue };
        assert!(!text.contains("../shared/"), "{} points at ../shared/, which users do not have", f.display());
    }
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let p = e.expect("dir entry").path();
        if p.is_dir() { walk(&p, out) } else { out.push(p) }
    }
}
