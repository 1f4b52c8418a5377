//! Child output: non-blocking pipe reads in the supervisor's poll loop, written to log
//! files with supervisord-style size rotation (`name.log`, `name.log.1` … `name.log.N`).

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::fcntl::{FcntlArg, OFlag, fcntl};

/// A log file that rotates by size.
#[derive(Debug)]
pub struct RotatingLog {
    path: PathBuf,
    maxbytes: u64,
    backups: u32,
    file: Option<File>,
    size: u64,
    /// The last error opening or writing, reported once.
    failed: Option<String>,
}

impl RotatingLog {
    /// A log at `path`; the file is opened (appending) on the first write.
    /// `maxbytes == 0` never rotates; `backups == 0` truncates instead of keeping copies.
    pub fn new(path: PathBuf, maxbytes: u64, backups: u32) -> RotatingLog {
        RotatingLog {
            path,
            maxbytes,
            backups,
            file: None,
            size: 0,
            failed: None,
        }
    }

    /// The current file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn open(&mut self) -> io::Result<&mut File> {
        if self.file.is_none() {
            if let Some(dir) = self.path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            // std opens with O_CLOEXEC: no child ever inherits a log file.
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
            self.size = f.metadata()?.len();
            self.file = Some(f);
        }
        Ok(self.file.as_mut().expect("opened just above"))
    }

    /// Appends `data`, rotating once the file has reached `maxbytes` (a file may pass
    /// the limit by the last chunk written). On an I/O error the data is dropped and
    /// the error is returned the first time it happens (then `Ok` until it changes).
    pub fn write(&mut self, data: &[u8]) -> Result<(), String> {
        match self.try_write(data) {
            Ok(()) => {
                self.failed = None;
                Ok(())
            }
            Err(e) => {
                let msg = format!("cannot write log {}: {e}", self.path.display());
                self.file = None;
                if self.failed.as_deref() == Some(msg.as_str()) {
                    Ok(())
                } else {
                    self.failed = Some(msg.clone());
                    Err(msg)
                }
            }
        }
    }

    fn try_write(&mut self, data: &[u8]) -> io::Result<()> {
        let f = self.open()?;
        f.write_all(data)?;
        self.size += data.len() as u64;
        if self.maxbytes > 0 && self.size >= self.maxbytes {
            self.rotate()?;
        }
        Ok(())
    }

    /// `name.log.(N-1)` → `name.log.N` … `name.log` → `name.log.1`, then a fresh `name.log`.
    fn rotate(&mut self) -> io::Result<()> {
        self.file = None;
        if self.backups == 0 {
            std::fs::remove_file(&self.path)?;
        } else {
            let numbered = |i: u32| {
                let mut s = self.path.clone().into_os_string();
                s.push(format!(".{i}"));
                PathBuf::from(s)
            };
            for i in (1..self.backups).rev() {
                let from = numbered(i);
                if from.exists() {
                    std::fs::rename(&from, numbered(i + 1))?;
                }
            }
            std::fs::rename(&self.path, numbered(1))?;
        }
        self.size = 0;
        self.open()?;
        Ok(())
    }

    /// Closes the file (it is reopened on the next write).
    pub fn close(&mut self) {
        self.file = None;
    }
}

/// The host's read end of a child's stdout or stderr pipe, non-blocking.
#[derive(Debug)]
pub struct LogPipe {
    file: File,
}

/// What a read pass over a pipe found.
#[derive(Debug, PartialEq, Eq)]
pub enum Drain {
    /// Read everything available; the pipe is still open.
    Open,
    /// The write ends are all closed.
    Eof,
}

/// Most bytes read from one pipe per poll wake-up, so one chatty child cannot starve the loop.
const MAX_READ_PER_WAKE: usize = 256 * 1024;

impl LogPipe {
    /// Wraps a pipe read end and makes it non-blocking.
    pub fn new(fd: OwnedFd) -> io::Result<LogPipe> {
        let flags = OFlag::from_bits_truncate(fcntl(&fd, FcntlArg::F_GETFL)?);
        fcntl(&fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
        Ok(LogPipe {
            file: File::from(fd),
        })
    }

    /// The fd to poll.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// Reads what is available (bounded) and passes it to `sink`.
    pub fn drain(&mut self, mut sink: impl FnMut(&[u8])) -> Drain {
        let mut buf = [0u8; 16 * 1024];
        let mut total = 0;
        while total < MAX_READ_PER_WAKE {
            match self.file.read(&mut buf) {
                Ok(0) => return Drain::Eof,
                Ok(n) => {
                    total += n;
                    sink(&buf[..n]);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Drain::Open,
                Err(_) => return Drain::Eof,
            }
        }
        Drain::Open
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_keeps_backups_with_supervisord_names() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        let mut log = RotatingLog::new(path.clone(), 10, 2);
        for chunk in ["0123456789", "abcdefghij", "ABCDEFGHIJ", "xyz"] {
            log.write(chunk.as_bytes()).unwrap();
        }
        let read = |p: &str| std::fs::read_to_string(dir.path().join(p)).unwrap();
        assert_eq!(read("a.log"), "xyz");
        assert_eq!(read("a.log.1"), "ABCDEFGHIJ");
        assert_eq!(read("a.log.2"), "abcdefghij");
        assert!(!dir.path().join("a.log.3").exists());
    }

    #[test]
    fn zero_backups_truncate_and_zero_maxbytes_never_rotates() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = RotatingLog::new(dir.path().join("b.log"), 4, 0);
        log.write(b"1234").unwrap();
        log.write(b"56").unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("b.log")).unwrap(),
            "56"
        );
        assert!(!dir.path().join("b.log.1").exists());
        let mut log = RotatingLog::new(dir.path().join("c.log"), 0, 3);
        for _ in 0..100 {
            log.write(b"0123456789").unwrap();
        }
        assert_eq!(
            std::fs::metadata(dir.path().join("c.log")).unwrap().len(),
            1000
        );
    }

    #[test]
    fn an_unwritable_log_reports_once_and_does_not_panic() {
        let mut log = RotatingLog::new(PathBuf::from("/proc/definitely/not/here.log"), 0, 0);
        assert!(log.write(b"x").is_err());
        assert!(log.write(b"y").is_ok(), "same error is reported once");
    }

    #[test]
    fn pipe_drains_without_blocking_and_sees_eof() {
        let (r, w) = nix::unistd::pipe().unwrap();
        let mut pipe = LogPipe::new(r).unwrap();
        let mut got = Vec::new();
        assert_eq!(pipe.drain(|b| got.extend_from_slice(b)), Drain::Open);
        nix::unistd::write(&w, b"hello").unwrap();
        assert_eq!(pipe.drain(|b| got.extend_from_slice(b)), Drain::Open);
        drop(w);
        assert_eq!(pipe.drain(|b| got.extend_from_slice(b)), Drain::Eof);
        assert_eq!(got, b"hello");
    }
}
