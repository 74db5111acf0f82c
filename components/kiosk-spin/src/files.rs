//! Reading the app's mounted files (Spin `files`) through `wasi:filesystem`
//! descriptors.
//!
//! `std::fs` on `wasm32-wasip2` reads a file through an input stream, and a
//! stream read that is not ready yet makes wasmtime hand the read to a
//! blocking thread and wait for it (two thread switches for each read, a few
//! per file). `descriptor.read` at an offset is one call that the host may
//! answer on the request's own thread: for a small read-only file that is a
//! few `pread`s and nothing else. The result is the same bytes either way.

use std::io;

use wasi::filesystem::preopens::get_directories;
use wasi::filesystem::types::{Descriptor, DescriptorFlags, ErrorCode, OpenFlags, PathFlags};

/// Bytes asked for per `descriptor.read`.
const READ_CHUNK: u64 = 64 * 1024;

/// Reads the whole file at the absolute guest `path` as UTF-8 text.
pub fn read_to_string(path: &str) -> io::Result<String> {
    let bytes = read(path)?;
    String::from_utf8(bytes).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "stream did not contain valid UTF-8",
        )
    })
}

/// Reads the whole file at the absolute guest `path`.
pub fn read(path: &str) -> io::Result<Vec<u8>> {
    let (dir, relative) = preopen_for(path)?;
    let file = dir
        .open_at(
            PathFlags::SYMLINK_FOLLOW,
            &relative,
            OpenFlags::empty(),
            DescriptorFlags::READ,
        )
        .map_err(to_io)?;
    let mut contents = Vec::new();
    loop {
        let (chunk, end) = file
            .read(READ_CHUNK, contents.len() as u64)
            .map_err(to_io)?;
        let done = end || chunk.is_empty();
        contents.extend_from_slice(&chunk);
        if done {
            return Ok(contents);
        }
    }
}

/// The preopened directory that holds `path` (the longest matching mount)
/// and the path relative to it.
fn preopen_for(path: &str) -> io::Result<(Descriptor, String)> {
    get_directories()
        .into_iter()
        .filter_map(|(dir, mount)| Some((mount.len(), dir, relative_to(&mount, path)?)))
        .max_by_key(|(mount_len, ..)| *mount_len)
        .map(|(_, dir, rest)| (dir, rest))
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no mounted directory holds it"))
}

/// `path` relative to the directory mounted at `mount`, if it is inside it.
fn relative_to(mount: &str, path: &str) -> Option<String> {
    let mount = mount.trim_end_matches('/');
    let rest = path.strip_prefix(mount)?;
    if !mount.is_empty() && !rest.is_empty() && !rest.starts_with('/') {
        return None; // `/catalogue` is not inside `/catalog`.
    }
    let rest = rest.trim_start_matches('/');
    Some(if rest.is_empty() {
        ".".into()
    } else {
        rest.into()
    })
}

fn to_io(code: ErrorCode) -> io::Error {
    let kind = match code {
        ErrorCode::NoEntry => io::ErrorKind::NotFound,
        ErrorCode::Access | ErrorCode::NotPermitted => io::ErrorKind::PermissionDenied,
        ErrorCode::IsDirectory => io::ErrorKind::IsADirectory,
        ErrorCode::NotDirectory => io::ErrorKind::NotADirectory,
        _ => io::ErrorKind::Other,
    };
    // `ErrorKind`'s text ("entity not found", ...) plus the WASI code.
    io::Error::new(kind, format!("{kind} ({})", code.name()))
}
