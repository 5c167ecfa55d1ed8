//! The kernel interfaces the differ needs, as `extern "C"` declarations with fixed layouts
//! (std has no statx, openat2, *xattr or readdir on a directory fd), and thin safe wrappers
//! that mirror ovforensics/safeio.py: every open is read-only, O_NOFOLLOW, O_CLOEXEC and
//! O_NOATIME where the kernel grants it (retried without it on EACCES/EPERM).
#![allow(non_camel_case_types)]

use std::ffi::CString;
use std::os::raw::{c_char, c_int, c_long, c_uint, c_void};

pub const ENOENT: i32 = 2;
pub const EINTR: i32 = 4;
pub const ENXIO: i32 = 6;
pub const EPERM: i32 = 1;
pub const EACCES: i32 = 13;
pub const ENOTDIR: i32 = 20;
pub const EINVAL: i32 = 22;
pub const ERANGE: i32 = 34;
pub const ENOSYS: i32 = 38;
pub const ELOOP: i32 = 40;
pub const ENODATA: i32 = 61;
pub const ENOTSUP: i32 = 95;

pub const O_RDONLY: c_int = 0;
pub const O_NONBLOCK: c_int = 0o4000;
pub const O_NOATIME: c_int = 0o1000000;
pub const O_CLOEXEC: c_int = 0o2000000;
pub const O_PATH: c_int = 0o10000000;
#[cfg(any(target_arch = "aarch64", target_arch = "arm"))]
pub const O_NOFOLLOW: c_int = 0o100000;
#[cfg(any(target_arch = "aarch64", target_arch = "arm"))]
pub const O_DIRECTORY: c_int = 0o40000;
#[cfg(not(any(target_arch = "aarch64", target_arch = "arm")))]
pub const O_NOFOLLOW: c_int = 0o400000;
#[cfg(not(any(target_arch = "aarch64", target_arch = "arm")))]
pub const O_DIRECTORY: c_int = 0o200000;

pub const AT_FDCWD: c_int = -100;
pub const AT_SYMLINK_NOFOLLOW: c_int = 0x100;
const STATX_BASIC_STATS: c_uint = 0x7ff;
const SEEK_DATA: c_int = 3;
const SYS_OPENAT2: c_long = 437; // one number on every architecture (the unified table)
const RESOLVE_NO_MAGICLINKS: u64 = 2;
const RESOLVE_NO_SYMLINKS: u64 = 4;
const RESOLVE_BENEATH: u64 = 8;

pub const BASE: c_int = O_RDONLY | O_NOFOLLOW | O_CLOEXEC;

#[repr(C, align(8))]
pub struct Statx {
    buf: [u8; 256],
}

#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

#[repr(C)]
pub struct Dirent64 {
    pub d_ino: u64,
    pub d_off: i64,
    pub d_reclen: u16,
    pub d_type: u8,
    pub d_name: [c_char; 256],
}

extern "C" {
    fn openat(dirfd: c_int, path: *const c_char, flags: c_int, ...) -> c_int;
    pub fn close(fd: c_int) -> c_int;
    fn dup(fd: c_int) -> c_int;
    fn read(fd: c_int, buf: *mut c_void, n: usize) -> isize;
    fn pread64(fd: c_int, buf: *mut c_void, n: usize, off: i64) -> isize;
    fn write(fd: c_int, buf: *const c_void, n: usize) -> isize;
    fn lseek64(fd: c_int, off: i64, whence: c_int) -> i64;
    fn statx(dirfd: c_int, path: *const c_char, flags: c_int, mask: c_uint, buf: *mut Statx) -> c_int;
    fn fdopendir(fd: c_int) -> *mut c_void;
    fn readdir64(d: *mut c_void) -> *const Dirent64;
    fn closedir(d: *mut c_void) -> c_int;
    fn llistxattr(path: *const c_char, list: *mut c_char, size: usize) -> isize;
    fn lgetxattr(path: *const c_char, name: *const c_char, value: *mut c_void, size: usize) -> isize;
    fn listxattr(path: *const c_char, list: *mut c_char, size: usize) -> isize;
    fn getxattr(path: *const c_char, name: *const c_char, value: *mut c_void, size: usize) -> isize;
    fn readlinkat(dirfd: c_int, path: *const c_char, buf: *mut c_char, size: usize) -> isize;
    fn syscall(num: c_long, ...) -> c_long;
    fn __errno_location() -> *mut c_int;
}

pub fn errno() -> i32 {
    unsafe { *__errno_location() }
}

fn set_errno(v: i32) {
    unsafe { *__errno_location() = v }
}

/// strerror(3)'s text, as Python's OSError.strerror gives it.
pub fn strerror(err: i32) -> String {
    let full = std::io::Error::from_raw_os_error(err).to_string();
    match full.rfind(" (os error ") {
        Some(i) => full[..i].to_string(),
        None => full,
    }
}

pub fn cstr(b: &[u8]) -> Result<CString, i32> {
    CString::new(b).map_err(|_| EINVAL)
}

fn open_raw(dirfd: c_int, path: &CString, flags: c_int) -> Result<c_int, i32> {
    loop {
        let fd = unsafe { openat(dirfd, path.as_ptr(), flags, 0 as c_uint) };
        if fd >= 0 {
            return Ok(fd);
        }
        let e = errno();
        if e != EINTR {
            return Err(e);
        }
    }
}

/// safeio._open: O_NOATIME first, without it where refused (PermissionError: EACCES, EPERM).
pub fn open_at(dirfd: c_int, path: &[u8], flags: c_int) -> Result<c_int, i32> {
    let c = cstr(path)?;
    match open_raw(dirfd, &c, flags | O_NOATIME) {
        Err(e) if e == EACCES || e == EPERM => open_raw(dirfd, &c, flags),
        r => r,
    }
}

pub fn open_dir(dirfd: c_int, path: &[u8]) -> Result<c_int, i32> {
    open_at(dirfd, path, BASE | O_DIRECTORY)
}

/// safeio.open_file: a regular file's fd; anything else refused unread (O_NONBLOCK: a FIFO
/// swapped in never blocks the open).
pub fn open_file(dirfd: c_int, path: &[u8]) -> Result<c_int, i32> {
    let fd = open_at(dirfd, path, BASE | O_NONBLOCK)?;
    let mut st = Statx { buf: [0; 256] };
    let empty = CString::new("").unwrap();
    let r = unsafe { statx(fd, empty.as_ptr(), 0x1000 /* AT_EMPTY_PATH */, STATX_BASIC_STATS, &mut st) };
    if r != 0 || st.mode() as u32 & 0o170000 != 0o100000 {
        unsafe { close(fd) };
        return Err(EINVAL);
    }
    Ok(fd)
}

pub fn dup_fd(fd: c_int) -> Result<c_int, i32> {
    let r = unsafe { dup(fd) };
    if r < 0 {
        Err(errno())
    } else {
        Ok(r)
    }
}

impl Statx {
    fn u16_at(&self, o: usize) -> u16 {
        u16::from_ne_bytes([self.buf[o], self.buf[o + 1]])
    }
    fn u32_at(&self, o: usize) -> u32 {
        let mut b = [0u8; 4];
        b.copy_from_slice(&self.buf[o..o + 4]);
        u32::from_ne_bytes(b)
    }
    fn u64_at(&self, o: usize) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.buf[o..o + 8]);
        u64::from_ne_bytes(b)
    }
    pub fn mode(&self) -> u16 {
        self.u16_at(28)
    }
}

/// The fields of a stat result the differ uses.
#[derive(Clone, Copy, Default)]
pub struct St {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: i64,
    pub blocks: u64,
    pub mtime_sec: i64,
    pub mtime_nsec: u32,
    pub rdev_major: u32,
    pub rdev_minor: u32,
}

impl St {
    pub fn mtime_ns(&self) -> i128 {
        self.mtime_sec as i128 * 1_000_000_000 + self.mtime_nsec as i128
    }
}

/// fstatat(dirfd, name, AT_SYMLINK_NOFOLLOW), as DirEntry.stat(follow_symlinks=False) does.
pub fn lstat_at(dirfd: c_int, path: &[u8]) -> Result<St, i32> {
    let c = cstr(path)?;
    let mut st = Statx { buf: [0; 256] };
    loop {
        let r = unsafe { statx(dirfd, c.as_ptr(), AT_SYMLINK_NOFOLLOW, STATX_BASIC_STATS, &mut st) };
        if r == 0 {
            break;
        }
        let e = errno();
        if e != EINTR {
            return Err(e);
        }
    }
    Ok(St {
        mode: st.mode() as u32,
        uid: st.u32_at(20),
        gid: st.u32_at(24),
        size: st.u64_at(40) as i64,
        blocks: st.u64_at(48),
        mtime_sec: st.u64_at(112) as i64,
        mtime_nsec: st.u32_at(120),
        rdev_major: st.u32_at(128),
        rdev_minor: st.u32_at(132),
    })
}

/// A directory stream over an fd (closes it).
pub struct Dir {
    d: *mut c_void,
    pub fd: c_int,
}

impl Dir {
    pub fn open(fd: c_int) -> Result<Dir, i32> {
        let d = unsafe { fdopendir(fd) };
        if d.is_null() {
            let e = errno();
            unsafe { close(fd) };
            return Err(e);
        }
        Ok(Dir { d, fd })
    }

    /// The next name (without . and ..), None at the end, Err on a read error.
    pub fn next_name(&mut self) -> Result<Option<Vec<u8>>, i32> {
        loop {
            set_errno(0);
            let ent = unsafe { readdir64(self.d) };
            if ent.is_null() {
                let e = errno();
                return if e == 0 { Ok(None) } else { Err(e) };
            }
            let name = unsafe { std::ffi::CStr::from_ptr((*ent).d_name.as_ptr()) }.to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            return Ok(Some(name.to_vec()));
        }
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        unsafe { closedir(self.d) };
    }
}

fn xattr_list(path: &CString, follow: bool) -> Result<Vec<u8>, i32> {
    loop {
        let size = unsafe {
            if follow {
                listxattr(path.as_ptr(), std::ptr::null_mut(), 0)
            } else {
                llistxattr(path.as_ptr(), std::ptr::null_mut(), 0)
            }
        };
        if size < 0 {
            return Err(errno());
        }
        if size == 0 {
            return Ok(Vec::new());
        }
        let mut buf = vec![0u8; size as usize];
        let got = unsafe {
            if follow {
                listxattr(path.as_ptr(), buf.as_mut_ptr() as *mut c_char, buf.len())
            } else {
                llistxattr(path.as_ptr(), buf.as_mut_ptr() as *mut c_char, buf.len())
            }
        };
        if got < 0 {
            let e = errno();
            if e == ERANGE {
                continue;
            }
            return Err(e);
        }
        buf.truncate(got as usize);
        return Ok(buf);
    }
}

fn xattr_get(path: &CString, name: &CString, follow: bool) -> Result<Vec<u8>, i32> {
    loop {
        let size = unsafe {
            if follow {
                getxattr(path.as_ptr(), name.as_ptr(), std::ptr::null_mut(), 0)
            } else {
                lgetxattr(path.as_ptr(), name.as_ptr(), std::ptr::null_mut(), 0)
            }
        };
        if size < 0 {
            return Err(errno());
        }
        let mut buf = vec![0u8; size as usize];
        if size == 0 {
            return Ok(buf);
        }
        let got = unsafe {
            if follow {
                getxattr(path.as_ptr(), name.as_ptr(), buf.as_mut_ptr() as *mut c_void, buf.len())
            } else {
                lgetxattr(path.as_ptr(), name.as_ptr(), buf.as_mut_ptr() as *mut c_void, buf.len())
            }
        };
        if got < 0 {
            let e = errno();
            if e == ERANGE {
                continue;
            }
            return Err(e);
        }
        buf.truncate(got as usize);
        return Ok(buf);
    }
}

pub type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

/// Every xattr of ``path`` (no link following when ``follow`` is false).
pub fn xattrs_path(path: &[u8], follow: bool) -> Result<Xattrs, i32> {
    let c = cstr(path)?;
    let list = xattr_list(&c, follow)?;
    let mut out = Vec::new();
    for name in list.split(|&b| b == 0) {
        if name.is_empty() {
            continue;
        }
        let n = cstr(name)?;
        let value = xattr_get(&c, &n, follow)?;
        out.push((name.to_vec(), value));
    }
    Ok(out)
}

/// safeio.xattrs_at: an O_PATH fd of the entry, read through its /proc/self/fd magic link.
pub fn xattrs_at(dirfd: c_int, name: &[u8]) -> Result<Xattrs, i32> {
    let c = cstr(name)?;
    let fd = open_raw(dirfd, &c, O_PATH | O_NOFOLLOW | O_CLOEXEC)?;
    let r = xattrs_path(format!("/proc/self/fd/{}", fd).as_bytes(), true);
    unsafe { close(fd) };
    r
}

pub fn readlink_at(dirfd: c_int, path: &[u8]) -> Result<Vec<u8>, i32> {
    let c = cstr(path)?;
    let mut buf = vec![0u8; 4097];
    let n = unsafe { readlinkat(dirfd, c.as_ptr(), buf.as_mut_ptr() as *mut c_char, 4096) };
    if n < 0 {
        return Err(errno());
    }
    buf.truncate(n as usize);
    Ok(buf)
}

/// read(2) until ``buf`` is full or the end of the file.
pub fn read_full(fd: c_int, buf: &mut [u8]) -> Result<usize, i32> {
    let mut got = 0;
    while got < buf.len() {
        let n = unsafe { read(fd, buf[got..].as_mut_ptr() as *mut c_void, buf.len() - got) };
        if n < 0 {
            let e = errno();
            if e == EINTR {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            break;
        }
        got += n as usize;
    }
    Ok(got)
}

/// One pread(2), as os.pread does.
pub fn pread_once(fd: c_int, buf: &mut [u8], off: i64) -> Result<usize, i32> {
    loop {
        let n = unsafe { pread64(fd, buf.as_mut_ptr() as *mut c_void, buf.len(), off) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = errno();
        if e != EINTR {
            return Err(e);
        }
    }
}

pub fn seek_data(fd: c_int, off: i64) -> Result<i64, i32> {
    let r = unsafe { lseek64(fd, off, SEEK_DATA) };
    if r < 0 {
        Err(errno())
    } else {
        Ok(r)
    }
}

pub fn write_all(fd: c_int, mut data: &[u8]) -> Result<(), i32> {
    while !data.is_empty() {
        let n = unsafe { write(fd, data.as_ptr() as *const c_void, data.len()) };
        if n < 0 {
            let e = errno();
            if e == EINTR {
                continue;
            }
            return Err(e);
        }
        data = &data[n as usize..];
    }
    Ok(())
}

/// safeio._openat2_dir: a directory below ``dirfd``, no symlink (nor magic link) at any
/// component, never above ``dirfd``.
pub fn openat2_dir(dirfd: c_int, rel: &[u8]) -> Result<c_int, i32> {
    let c = cstr(rel)?;
    let resolve = RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_BENEATH;
    for &flags in &[BASE | O_DIRECTORY | O_NOATIME, BASE | O_DIRECTORY] {
        let how = OpenHow { flags: flags as u64, mode: 0, resolve };
        let fd = unsafe {
            syscall(SYS_OPENAT2, dirfd as c_long, c.as_ptr(), &how as *const OpenHow,
                    std::mem::size_of::<OpenHow>())
        };
        if fd >= 0 {
            return Ok(fd as c_int);
        }
        let e = errno();
        if e == EPERM && flags & O_NOATIME != 0 {
            continue;
        }
        return Err(e);
    }
    Err(EINVAL)
}
