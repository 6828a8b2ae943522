//! A plugin binary wrapped in strace: a script that tests pass where the plugin's path would go
//! (`Node::add_pod`, `Invocation::new`), so the call runs exactly as a runtime makes it, traced.

use crate::netns::TempDir;
use std::path::{Path, PathBuf};

/// `plugin` run as `strace -f -qq -o LOG OPTIONS PLUGIN "$@"` from a script in a temp dir of
/// its own (removed on drop).
pub struct Traced {
    dir: TempDir,
}

impl Traced {
    /// Wraps `plugin`; `options` are strace's own (`-yy -s 0 -e trace=...`, `-e inject=...`).
    pub fn new(plugin: &Path, options: &str) -> Traced {
        let dir = TempDir::new("strace");
        let script = format!(
            "#!/bin/sh\nexec strace -f -qq -o {} {options} {} \"$@\"\n",
            dir.join("strace.log").display(),
            plugin.display()
        );
        let path = dir.join("plugin");
        std::fs::write(&path, script).expect("write the strace wrapper");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .expect("chmod the strace wrapper");
        Traced { dir }
    }

    /// The wrapper script: the path to run instead of the plugin's.
    pub fn plugin(&self) -> PathBuf {
        self.dir.join("plugin")
    }

    /// What strace logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("strace.log")).expect("read the strace log")
    }
}
