//! Stage inputs: `@stage[/path]` references and plain paths.
use std::fmt;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Deserializer};

/// A stage input as written in a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// `"@stage"` or `"@stage/sub/path"`: the output directory of another stage, or a
    /// path inside it. This is a dependency edge.
    Stage {
        /// The referenced stage.
        stage: String,
        /// The path inside its output directory (empty for the directory itself).
        subpath: PathBuf,
    },
    /// A plain path, relative to the manifest's directory; it must exist when the
    /// manifest is validated.
    File(PathBuf),
}

impl Input {
    /// Parse the manifest spelling: `@stage[/sub/path]` or a plain path.
    pub fn parse(text: &str) -> Input {
        match text.strip_prefix('@') {
            Some(reference) => {
                let (stage, sub) = reference.split_once('/').unwrap_or((reference, ""));
                Input::Stage {
                    stage: stage.to_string(),
                    subpath: drop_cur_dirs(Path::new(sub)),
                }
            }
            None => Input::File(PathBuf::from(text)),
        }
    }
}

impl fmt::Display for Input {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Input::Stage { stage, subpath } if subpath.as_os_str().is_empty() => {
                write!(f, "@{stage}")
            }
            Input::Stage { stage, subpath } => write!(f, "@{stage}/{}", subpath.display()),
            Input::File(path) => write!(f, "{}", path.display()),
        }
    }
}

impl<'de> Deserialize<'de> for Input {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        String::deserialize(d).map(|s| Input::parse(&s))
    }
}

/// `path` without `.` components (`./a/./b` → `a/b`); `..` is kept.
pub(crate) fn drop_cur_dirs(path: &Path) -> PathBuf {
    path.components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_parse_references_and_paths() {
        assert_eq!(
            Input::parse("@sae/toy.hook_hidden/"),
            Input::Stage {
                stage: "sae".into(),
                subpath: "toy.hook_hidden".into()
            }
        );
        assert_eq!(
            Input::parse("@sae/toy.hook_hidden").to_string(),
            "@sae/toy.hook_hidden"
        );
        assert_eq!(Input::parse("@model").to_string(), "@model");
        assert_eq!(Input::parse("data/x.txt"), Input::File("data/x.txt".into()));
    }
}
