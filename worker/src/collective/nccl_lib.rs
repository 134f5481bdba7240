//! Where NCCL's shared library is. cudarc loads it by the names `libnccl.so` and
//! `libnccl.so.<CUDA major>`, never by NCCL's real soname `libnccl.so.2` (the only name
//! Python's `nvidia-nccl-cu*` packages ship), so kiln finds the file itself and opens it by
//! path: `NCCL_LIBRARY` when set, else the first `libnccl.so.2` (or `libnccl.so`) in the
//! directories of `LD_LIBRARY_PATH`, in the `nvidia/nccl/lib` folder of the `nvidia-nccl`
//! package that `python3` imports, and in the system's library folders.

use std::path::{Path, PathBuf};

/// An explicit path to the library, which wins over every search.
pub const NCCL_LIBRARY_ENV: &str = "NCCL_LIBRARY";

/// The file names tried in each folder, NCCL's soname first.
const NAMES: [&str; 2] = ["libnccl.so.2", "libnccl.so"];

/// Where distributions and CUDA installers put it.
const SYSTEM_DIRS: [&str; 5] = [
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/usr/local/cuda/lib64",
    "/usr/lib64",
    "/usr/lib",
];

/// The library this process should load, or what was searched.
pub fn find() -> Result<PathBuf, String> {
    let explicit = std::env::var_os(NCCL_LIBRARY_ENV).map(PathBuf::from);
    let library_path = std::env::var("LD_LIBRARY_PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&library_path).collect();
    dirs.extend(python_package_dir());
    dirs.extend(SYSTEM_DIRS.iter().map(PathBuf::from));
    find_in(explicit.as_deref(), &dirs)
}

/// [`find`] over an explicit path and the folders to search.
fn find_in(explicit: Option<&Path>, dirs: &[PathBuf]) -> Result<PathBuf, String> {
    if let Some(path) = explicit {
        return if path.is_file() {
            Ok(path.to_owned())
        } else {
            Err(format!(
                "{NCCL_LIBRARY_ENV}={} names no file",
                path.display()
            ))
        };
    }
    dirs.iter()
        .filter(|d| !d.as_os_str().is_empty())
        .flat_map(|d| NAMES.iter().map(move |n| d.join(n)))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            let searched: Vec<String> = dirs
                .iter()
                .filter(|d| !d.as_os_str().is_empty())
                .map(|d| d.display().to_string())
                .collect();
            format!(
                "NCCL's library (libnccl.so.2) is not in {}; install it (`pip install nvidia-nccl-cu13`, or your distribution's libnccl2) or point {NCCL_LIBRARY_ENV} at it",
                searched.join(", ")
            )
        })
}

/// `nvidia/nccl/lib` of the `nvidia-nccl` package `python3` imports, if any.
fn python_package_dir() -> Option<PathBuf> {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import os, nvidia.nccl as n; print(os.path.join(list(n.__path__)[0], 'lib'))",
        ])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    let dir = String::from_utf8(out.stdout).ok()?;
    Some(PathBuf::from(dir.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soname_is_found_in_the_first_folder_that_has_it() {
        let root = tempfile::tempdir().expect("tempdir");
        let (empty, python, system) = (
            root.path().join("empty"),
            root.path().join("site-packages/nvidia/nccl/lib"),
            root.path().join("usr/lib"),
        );
        for dir in [&empty, &python, &system] {
            std::fs::create_dir_all(dir).expect("dir");
        }
        std::fs::write(python.join("libnccl.so.2"), b"").expect("lib");
        std::fs::write(system.join("libnccl.so"), b"").expect("lib");
        let dirs = [
            PathBuf::new(),
            empty.clone(),
            python.clone(),
            system.clone(),
        ];
        assert_eq!(find_in(None, &dirs), Ok(python.join("libnccl.so.2")));
        assert_eq!(
            find_in(None, &[empty.clone(), system.clone()]),
            Ok(system.join("libnccl.so"))
        );

        let missing = find_in(None, std::slice::from_ref(&empty)).expect_err("none there");
        assert!(missing.contains(&empty.display().to_string()), "{missing}");
        assert!(missing.contains("NCCL_LIBRARY"), "{missing}");
    }

    #[test]
    fn an_explicit_path_wins_and_must_exist() {
        let root = tempfile::tempdir().expect("tempdir");
        let lib = root.path().join("libnccl.so.2.27.3");
        std::fs::write(&lib, b"").expect("lib");
        assert_eq!(find_in(Some(&lib), &[]), Ok(lib.clone()));
        let gone = root.path().join("nope.so");
        let why = find_in(Some(&gone), &[root.path().to_owned()]).expect_err("no file");
        assert!(why.starts_with("NCCL_LIBRARY="), "{why}");
    }
}
