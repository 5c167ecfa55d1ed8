//! Directory layers as ovforensics/layer.py's DirLayer reads them: each directory listed once
//! (readdir on an O_NOATIME fd, each entry fstatat-ed relative to it, never followed), xattrs
//! and link targets read lazily, errors kept per layer as (physical path, why). Paths of
//! PATH_LONG bytes or more are reached through a Walker (safeio.FdWalker's rules: openat2
//! RESOLVE_BENEATH|NO_SYMLINKS steps below PATH_MAX, O_NOFOLLOW per component without openat2).
use std::cell::RefCell;
use std::os::raw::c_int;
use std::rc::Rc;

use crate::sys::{self, St, Xattrs};

pub const PATH_LONG: usize = 4000;
const STEP: usize = 3800;
const MARK: usize = 2000;
const MAX_MARKS: usize = 32;

/// A directory path inside a layer: a chain of names up to the root (depth 0, no name).
pub struct Node {
    pub parent: Option<Rc<Node>>,
    pub name: Rc<[u8]>,
    pub depth: usize,
    pub hash: u64,
}

pub fn hash_name(parent: u64, name: &[u8]) -> u64 {
    let mut h = parent ^ 0xcbf2_9ce4_8422_2325;
    for &b in name {
        h ^= b as u64;
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h ^ (h >> 29)
}

impl Node {
    pub fn root() -> Rc<Node> {
        Rc::new(Node { parent: None, name: Rc::from(&b""[..]), depth: 0, hash: 7 })
    }

    pub fn child(parent: &Rc<Node>, name: &Rc<[u8]>) -> Rc<Node> {
        Rc::new(Node {
            parent: Some(parent.clone()),
            name: name.clone(),
            depth: parent.depth + 1,
            hash: hash_name(parent.hash, name),
        })
    }

    /// The ancestor at ``depth`` (self when equal).
    pub fn at_depth(self: &Rc<Node>, depth: usize) -> Rc<Node> {
        let mut n = self.clone();
        while n.depth > depth {
            n = n.parent.clone().unwrap();
        }
        n
    }

    /// Components, root first.
    pub fn components(&self) -> Vec<Rc<[u8]>> {
        let mut out = Vec::with_capacity(self.depth);
        let mut n: Option<&Node> = Some(self);
        while let Some(x) = n {
            if x.depth == 0 {
                break;
            }
            out.push(x.name.clone());
            n = x.parent.as_deref();
        }
        out.reverse();
        out
    }

    /// b"/".join(path)
    pub fn join_into(&self, out: &mut Vec<u8>) {
        let parts = self.components();
        for (i, p) in parts.iter().enumerate() {
            if i > 0 {
                out.push(b'/');
            }
            out.extend_from_slice(p);
        }
    }
}

pub fn path_eq(a: &Rc<Node>, b: &Rc<Node>) -> bool {
    let mut a = a;
    let mut b = b;
    loop {
        if Rc::ptr_eq(a, b) {
            return true;
        }
        if a.depth != b.depth || a.hash != b.hash || a.name != b.name {
            return false;
        }
        match (&a.parent, &b.parent) {
            (Some(pa), Some(pb)) => {
                a = pa;
                b = pb;
            }
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Fifo,
    Socket,
    Char,
    Block,
    Unknown,
}

impl Kind {
    pub fn from_mode(mode: u32) -> Kind {
        match mode & 0o170000 {
            0o100000 => Kind::File,
            0o040000 => Kind::Dir,
            0o120000 => Kind::Symlink,
            0o010000 => Kind::Fifo,
            0o140000 => Kind::Socket,
            0o020000 => Kind::Char,
            0o060000 => Kind::Block,
            _ => Kind::Unknown,
        }
    }
    pub fn text(self) -> &'static str {
        match self {
            Kind::File => "file",
            Kind::Dir => "dir",
            Kind::Symlink => "symlink",
            Kind::Fifo => "fifo",
            Kind::Socket => "socket",
            Kind::Char => "char",
            Kind::Block => "block",
            Kind::Unknown => "unknown",
        }
    }
}

/// One entry of one layer (layer.py's DiskEntry).
pub struct Entry {
    pub layer: usize,
    pub parent: Option<Rc<Node>>, // None: the layer's root
    pub name: Rc<[u8]>,
    pub kind: Kind,
    pub st: St,
    pub xattrs: RefCell<Option<Rc<Xattrs>>>,
    pub target: RefCell<Option<Rc<[u8]>>>,
}

impl Entry {
    pub fn is_dir(&self) -> bool {
        self.kind == Kind::Dir
    }
    pub fn depth(&self) -> usize {
        match &self.parent {
            None => 0,
            Some(p) => p.depth + 1,
        }
    }
    pub fn hash(&self) -> u64 {
        match &self.parent {
            None => 7,
            Some(p) => hash_name(p.hash, &self.name),
        }
    }
    /// The entry's own path as a Node (for a directory that is listed).
    pub fn node(&self) -> Rc<Node> {
        match &self.parent {
            None => Node::root(),
            Some(p) => Node::child(p, &self.name),
        }
    }
    /// Whether the entry's path equals ``node``'s.
    pub fn is_at(&self, node: &Rc<Node>) -> bool {
        match &self.parent {
            None => node.depth == 0,
            Some(p) => {
                node.depth == p.depth + 1 && node.name == self.name
                    && node.parent.as_ref().map_or(false, |np| path_eq(np, p))
            }
        }
    }
}

/// compare.same_entry: the same layer and path.
pub fn same_entry(a: &Rc<Entry>, b: &Rc<Entry>) -> bool {
    if Rc::ptr_eq(a, b) {
        return true;
    }
    if a.layer != b.layer || a.name != b.name {
        return false;
    }
    match (&a.parent, &b.parent) {
        (None, None) => true,
        (Some(x), Some(y)) => path_eq(x, y),
        _ => false,
    }
}

/// safeio.FdWalker: directory fds for paths too long to open by name.
pub struct Walker {
    root: Vec<u8>,
    root_fd: c_int,
    marks: Vec<(Rc<Node>, c_int)>,
    tail: Option<(Rc<Node>, c_int)>,
}

static mut OPENAT2_MISSING: bool = false;

/// Walk long paths one O_NOFOLLOW openat per component from now on (safeio's fallback where
/// the kernel has no openat2; tests force it with OVF_NATIVE_NO_OPENAT2).
pub fn no_openat2() {
    unsafe { OPENAT2_MISSING = true };
}

fn step(dirfd: c_int, names: &[Rc<[u8]>]) -> Result<c_int, i32> {
    for n in names {
        if n.is_empty() || &n[..] == b"." || &n[..] == b".." || n.contains(&b'/') {
            return Err(sys::EINVAL);
        }
    }
    if !unsafe { OPENAT2_MISSING } {
        let mut rel = Vec::new();
        for (i, n) in names.iter().enumerate() {
            if i > 0 {
                rel.push(b'/');
            }
            rel.extend_from_slice(n);
        }
        match sys::openat2_dir(dirfd, &rel) {
            Err(e) if e == sys::ENOSYS => unsafe { OPENAT2_MISSING = true },
            r => return r,
        }
    }
    let mut fd = dirfd;
    for n in names {
        match sys::open_dir(fd, n) {
            Ok(new) => {
                if fd != dirfd {
                    unsafe { sys::close(fd) };
                }
                fd = new;
            }
            Err(e) => {
                if fd != dirfd {
                    unsafe { sys::close(fd) };
                }
                return Err(e);
            }
        }
    }
    Ok(fd)
}

impl Walker {
    pub fn new(root: &[u8]) -> Walker {
        Walker { root: root.to_vec(), root_fd: -1, marks: Vec::new(), tail: None }
    }

    pub fn holding(&self) -> bool {
        self.root_fd >= 0
    }

    /// A borrowed fd of directory ``path``.
    pub fn dir_fd(&mut self, path: &Rc<Node>) -> Result<c_int, i32> {
        if let Some((p, fd)) = &self.tail {
            if path_eq(p, path) {
                return Ok(*fd);
            }
        }
        while let Some((m, _)) = self.marks.last() {
            if m.depth <= path.depth && path_eq(&path.at_depth(m.depth), m) {
                break;
            }
            let (_, fd) = self.marks.pop().unwrap();
            unsafe { sys::close(fd) };
        }
        if let Some((m, fd)) = self.marks.last() {
            if m.depth == path.depth {
                return Ok(*fd);
            }
        }
        if self.root_fd < 0 {
            self.root_fd = sys::open_dir(sys::AT_FDCWD, &self.root)?;
        }
        let (mut pos, mut fd) = match self.marks.last() {
            Some((m, fd)) => (m.depth, *fd),
            None => (0, self.root_fd),
        };
        // the path's nodes from depth pos+1 down to the path itself
        let mut chain: Vec<Rc<Node>> = Vec::with_capacity(path.depth - pos);
        let mut n = path.clone();
        while n.depth > pos {
            chain.push(n.clone());
            n = n.parent.clone().unwrap();
        }
        chain.reverse();
        let mut owned = false;
        let base = pos;
        while pos < path.depth {
            let mut names: Vec<Rc<[u8]>> = Vec::new();
            let mut size = 0usize;
            while pos + names.len() < path.depth {
                let name = &chain[pos + names.len() - base].name;
                if !names.is_empty() && size + name.len() + 1 > STEP {
                    break;
                }
                size += name.len() + 1;
                names.push(name.clone());
            }
            let new = match step(fd, &names) {
                Ok(x) => x,
                Err(e) => {
                    if owned {
                        unsafe { sys::close(fd) };
                    }
                    return Err(e);
                }
            };
            if owned {
                unsafe { sys::close(fd) };
            }
            fd = new;
            owned = true;
            pos += names.len();
            if size >= MARK && self.marks.len() < MAX_MARKS {
                self.marks.push((chain[pos - 1 - base].clone(), fd));
                owned = false;
            }
        }
        if owned {
            self.keep(path.clone(), fd);
        }
        Ok(fd)
    }

    pub fn keep(&mut self, path: Rc<Node>, fd: c_int) {
        if let Some((_, old)) = self.tail.take() {
            unsafe { sys::close(old) };
        }
        self.tail = Some((path, fd));
    }

    pub fn close(&mut self) {
        for (_, fd) in self.marks.drain(..) {
            unsafe { sys::close(fd) };
        }
        if let Some((_, fd)) = self.tail.take() {
            unsafe { sys::close(fd) };
        }
        if self.root_fd >= 0 {
            unsafe { sys::close(self.root_fd) };
            self.root_fd = -1;
        }
    }
}

impl Drop for Walker {
    fn drop(&mut self) {
        self.close();
    }
}

pub enum Listing {
    Full(Vec<Rc<Entry>>),
    Names(Vec<Rc<[u8]>>, c_int), // sorted names, an fd of the directory
}

pub struct Layer {
    pub root: Vec<u8>,
    pub label: String,
    pub errors: Vec<(Vec<u8>, String)>,
    pub walker: Walker,
    /// --whiteouts auto, rules not decided yet (DirLayer.guess_rules)
    pub auto: bool,
    /// a listing of this auto layer held a .wh. name: the rules must be decided now
    pub wants_guess: bool,
}

impl Layer {
    pub fn new(root: Vec<u8>, label: String) -> Layer {
        let walker = Walker::new(&root);
        Layer { root, label, errors: Vec::new(), walker, auto: false, wants_guess: false }
    }

    /// DirLayer.physical for a directory node.
    pub fn physical_node(&self, node: &Node) -> Vec<u8> {
        let mut out = self.root.clone();
        if node.depth > 0 {
            out.push(b'/');
            node.join_into(&mut out);
        }
        out
    }

    pub fn physical(&self, e: &Entry) -> Vec<u8> {
        match &e.parent {
            None => self.root.clone(),
            Some(p) => {
                let mut out = self.physical_node(p);
                out.push(b'/');
                out.extend_from_slice(&e.name);
                out
            }
        }
    }

    /// DirLayer.inside: b"/" + the path inside the layer of an on-disk path, or b"".
    pub fn inside(&self, where_: &[u8]) -> Vec<u8> {
        if where_ == &self.root[..] {
            return b"/".to_vec();
        }
        let mut prefix = self.root.clone();
        while prefix.last() == Some(&b'/') {
            prefix.pop();
        }
        prefix.push(b'/');
        if where_.starts_with(&prefix) {
            let mut out = b"/".to_vec();
            out.extend_from_slice(&where_[prefix.len()..]);
            out
        } else {
            Vec::new()
        }
    }

    pub fn root_entry(&mut self, index: usize) -> Result<Rc<Entry>, i32> {
        let st = sys::lstat_at(sys::AT_FDCWD, &self.root)?;
        Ok(Rc::new(Entry {
            layer: index,
            parent: None,
            name: Rc::from(&b""[..]),
            kind: Kind::from_mode(st.mode),
            st,
            xattrs: RefCell::new(None),
            target: RefCell::new(None),
        }))
    }

    /// DirLayer.forget's fd release.
    pub fn forget(&mut self, depth: usize) {
        if self.walker.holding() && self.root.len() + 256 * depth < PATH_LONG {
            self.walker.close();
        }
    }

    /// DirLayer._read_dir: the entries of directory ``node``, in readdir order, or None where
    /// it is no directory (or cannot be opened: recorded unless it vanished). Past ``big``
    /// entries, the names only (bigdir.NameListing.take_over: the names of the entries stat-ed
    /// so far, the one in hand and the rest, sorted) with a dup of the directory's fd.
    pub fn read_dir(&mut self, index: usize, node: &Rc<Node>, big: usize) -> Option<Listing> {
        let where_ = self.physical_node(node);
        let opened = if where_.len() < PATH_LONG {
            sys::open_dir(sys::AT_FDCWD, &where_)
        } else {
            let parent = node.parent.clone().unwrap();
            match self.walker.dir_fd(&parent) {
                Err(e) => Err(e),
                Ok(pfd) => match sys::open_dir(pfd, &node.name) {
                    Err(e) => Err(e),
                    Ok(fd) => match sys::dup_fd(fd) {
                        Ok(d) => {
                            self.walker.keep(node.clone(), d);
                            Ok(fd)
                        }
                        Err(e) => {
                            unsafe { sys::close(fd) };
                            Err(e)
                        }
                    },
                },
            }
        };
        let fd = match opened {
            Ok(fd) => fd,
            Err(e) => {
                if e != sys::ENOENT && e != sys::ENOTDIR && e != sys::ELOOP {
                    self.errors.push((where_, sys::strerror(e)));
                }
                return None;
            }
        };
        let mut dir = match sys::Dir::open(fd) {
            Ok(d) => d,
            Err(e) => {
                self.errors.push((where_, sys::strerror(e)));
                return Some(Listing::Full(Vec::new()));
            }
        };
        let mut out: Vec<Rc<Entry>> = Vec::new();
        loop {
            match dir.next_name() {
                Ok(None) => break,
                Err(e) => {
                    self.errors.push((where_.clone(), sys::strerror(e)));
                    break;
                }
                Ok(Some(name)) if out.len() >= big => {
                    let mut names: Vec<Rc<[u8]>> = out.iter().map(|e| e.name.clone()).collect();
                    names.push(Rc::from(&name[..]));
                    loop {
                        match dir.next_name() {
                            Ok(Some(n)) => names.push(Rc::from(&n[..])),
                            Ok(None) => break,
                            Err(e) => {
                                // an error mid-way: scandir raises, _read_dir records it and
                                // keeps the entries stat-ed so far
                                self.errors.push((where_.clone(), sys::strerror(e)));
                                return Some(Listing::Full(out));
                            }
                        }
                    }
                    names.sort_unstable();
                    if self.auto && names.iter().any(|n| n.starts_with(b".wh.")) {
                        self.wants_guess = true; // bigdir.NameListing.take_over's check_rules
                    }
                    return match sys::dup_fd(dir.fd) {
                        Ok(fd) => Some(Listing::Names(names, fd)),
                        Err(e) => {
                            self.errors.push((where_, sys::strerror(e)));
                            Some(Listing::Full(out))
                        }
                    };
                }
                Ok(Some(name)) => match sys::lstat_at(dir.fd, &name) {
                    Ok(st) => out.push(Rc::new(Entry {
                        layer: index,
                        parent: Some(node.clone()),
                        name: Rc::from(&name[..]),
                        kind: Kind::from_mode(st.mode),
                        st,
                        xattrs: RefCell::new(None),
                        target: RefCell::new(None),
                    })),
                    Err(e) => {
                        let mut w = where_.clone();
                        w.push(b'/');
                        w.extend_from_slice(&name);
                        self.errors.push((w, sys::strerror(e)));
                    }
                },
            }
        }
        if self.auto && out.iter().any(|e| e.name.starts_with(b".wh.")) {
            self.wants_guess = true; // DirLayer._read_dir's check_rules
        }
        Some(Listing::Full(out))
    }

    /// bigdir.NameListing._stat: one entry of a names-only directory, stat-ed when asked for.
    pub fn stat_in(&mut self, index: usize, node: &Rc<Node>, fd: c_int, name: &Rc<[u8]>) -> Option<Rc<Entry>> {
        match sys::lstat_at(fd, name) {
            Ok(st) => Some(Rc::new(Entry {
                layer: index,
                parent: Some(node.clone()),
                name: name.clone(),
                kind: Kind::from_mode(st.mode),
                st,
                xattrs: RefCell::new(None),
                target: RefCell::new(None),
            })),
            Err(e) => {
                let mut w = self.physical_node(node);
                w.push(b'/');
                w.extend_from_slice(name);
                self.errors.push((w, sys::strerror(e)));
                None
            }
        }
    }

    /// DirLayer.read_xattrs (errors other than ENOTSUP/ENODATA recorded; {} then).
    pub fn read_xattrs(&mut self, e: &Entry) -> Xattrs {
        let where_ = self.physical(e);
        let got = if where_.len() >= PATH_LONG {
            let parent = e.parent.clone().unwrap();
            match self.walker.dir_fd(&parent) {
                Ok(fd) => sys::xattrs_at(fd, &e.name),
                Err(x) => Err(x),
            }
        } else {
            sys::xattrs_path(&where_, false)
        };
        match got {
            Ok(x) => x,
            Err(x) if x == sys::ENOTSUP || x == sys::ENODATA => Vec::new(),
            Err(x) => {
                self.errors.push((where_, format!("xattrs: {}", sys::strerror(x))));
                Vec::new()
            }
        }
    }

    /// DirLayer.read_target (b"" and an error where it cannot be read).
    pub fn read_target(&mut self, e: &Entry) -> Vec<u8> {
        let where_ = self.physical(e);
        let got = if where_.len() < PATH_LONG {
            sys::readlink_at(sys::AT_FDCWD, &where_)
        } else {
            let parent = e.parent.clone().unwrap();
            match self.walker.dir_fd(&parent) {
                Ok(fd) => sys::readlink_at(fd, &e.name),
                Err(x) => Err(x),
            }
        };
        match got {
            Ok(t) => t,
            Err(x) => {
                self.errors.push((where_, sys::strerror(x)));
                Vec::new()
            }
        }
    }

    /// DirLayer.open: a regular file's fd (never a FIFO, device or link).
    pub fn open(&mut self, e: &Entry) -> Result<c_int, i32> {
        if e.kind != Kind::File {
            return Err(sys::EINVAL);
        }
        let where_ = self.physical(e);
        if where_.len() < PATH_LONG {
            sys::open_file(sys::AT_FDCWD, &where_)
        } else {
            let parent = e.parent.clone().unwrap();
            let fd = self.walker.dir_fd(&parent)?;
            sys::open_file(fd, &e.name)
        }
    }
}
