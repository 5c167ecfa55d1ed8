//! The differ, a line-by-line port of ovforensics/diff.py, resolve.py (View.lookup, the
//! kernel's ovl_lookup), markers.py (kernel rules) and compare.py. The walk is an explicit
//! stack (a 10,000-deep tree needs no recursion) and visits names in the same order, reading
//! the same entries' xattrs and targets at the same moments, so records and the errors the
//! layers record come out in the same order as the Python differ's.
use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

use crate::layer::{same_entry, Entry, Kind, Layer, Listing, Node};
use crate::out::{Lower, Meta, Out, Rec};
use crate::sys::{self, Xattrs};

pub const TRUSTED: &[u8] = b"trusted.overlay.";
pub const USER: &[u8] = b"user.overlay.";
const WH_PREFIX: &[u8] = b".wh.";
const CHUNK: usize = 1 << 20;

pub const W_TYPE: u8 = 1;
pub const W_CONTENT: u8 = 2;
pub const W_TARGET: u8 = 4;
pub const W_MODE: u8 = 8;
pub const W_OWNER: u8 = 16;
pub const W_MTIME: u8 = 32;
pub const W_XATTRS: u8 = 64;

/// markers.DirView (kernel rules): what a directory of one layer shows and hides, sorted; or,
/// for a directory listed by name only (bigdir), markers.LazyDirView over a NameListing.
pub struct DirView {
    pub node: Rc<Node>,
    pub layer: usize,
    pub entries: Vec<Rc<Entry>>,
    pub whiteouts: Vec<(&'static str, Rc<Entry>)>,
    pub opaque: bool,
    pub lazy: Option<RefCell<Lazy>>,
}

/// bigdir.NameListing: sorted names, the directory's fd, the last RECENT lookups (FIFO).
pub struct Lazy {
    names: Vec<Rc<[u8]>>,
    fd: i32,
    recent: HashMap<Rc<[u8]>, Option<Rc<Entry>>>,
    order: VecDeque<Rc<[u8]>>,
}

impl Drop for Lazy {
    fn drop(&mut self) {
        unsafe { sys::close(self.fd) };
    }
}

const RECENT: usize = 256;

impl DirView {
    fn full_get(&self, name: &[u8]) -> Option<Rc<Entry>> {
        self.entries.binary_search_by(|e| (*e.name).cmp(name)).ok().map(|i| self.entries[i].clone())
    }
    fn full_whiteout(&self, name: &[u8]) -> Option<(&'static str, Rc<Entry>)> {
        self.whiteouts.binary_search_by(|w| (*w.1.name).cmp(name)).ok().map(|i| self.whiteouts[i].clone())
    }
    /// sorted_names(): every name the directory shows or hides.
    fn sorted_names(&self) -> Vec<Rc<[u8]>> {
        if let Some(l) = &self.lazy {
            return l.borrow().names.clone();
        }
        let mut out: Vec<Rc<[u8]>> = self.entries.iter().map(|e| e.name.clone()).collect();
        out.extend(self.whiteouts.iter().map(|w| w.1.name.clone()));
        out.sort_unstable();
        out.dedup();
        out
    }
}

#[derive(Clone)]
pub struct Frame {
    pub pos: usize,
    pub entry: Rc<Entry>,
}

pub struct Resolved {
    pub top: Rc<Entry>,
    pub pos: usize,
    pub frames: Vec<Frame>,
    pub data: Option<Rc<Entry>>,
    pub redirected_from: Option<Vec<u8>>,
    pub problems: Vec<(&'static str, String)>,
}

enum Redirect {
    Abs(Vec<Vec<u8>>),
    Rel(Vec<u8>),
}

/// Python's repr() of a bytes value.
pub fn bytes_repr(b: &[u8]) -> String {
    let quote = if b.contains(&b'\'') && !b.contains(&b'"') { '"' } else { '\'' };
    let mut s = String::from("b");
    s.push(quote);
    for &c in b {
        match c {
            b'\\' => s.push_str("\\\\"),
            b'\t' => s.push_str("\\t"),
            b'\n' => s.push_str("\\n"),
            b'\r' => s.push_str("\\r"),
            _ if c as char == quote => {
                s.push('\\');
                s.push(quote)
            }
            0x20..=0x7e => s.push(c as char),
            _ => s.push_str(&format!("\\x{:02x}", c)),
        }
    }
    s.push(quote);
    s
}

/// resolve.parse_redirect
fn parse_redirect(value: &[u8]) -> Result<Redirect, String> {
    let mut end = value.len();
    while end > 0 && value[end - 1] == 0 {
        end -= 1;
    }
    let value = &value[..end];
    if value.is_empty() {
        return Err("empty redirect".to_string());
    }
    if value[0] == b'/' {
        let parts: Vec<Vec<u8>> = value[1..].split(|&c| c == b'/').map(|p| p.to_vec()).collect();
        if parts.iter().any(|p| p.is_empty() || &p[..] == b"." || &p[..] == b"..") {
            return Err(format!("redirect {} has an empty, '.' or '..' component", bytes_repr(value)));
        }
        return Ok(Redirect::Abs(parts));
    }
    if value.contains(&b'/') || value == b"." || value == b".." {
        return Err(format!("relative redirect {} is not a single name", bytes_repr(value)));
    }
    Ok(Redirect::Rel(value.to_vec()))
}

struct Task {
    name: Option<Rc<[u8]>>,
    mframes: Vec<Frame>,
    bframes: Vec<Frame>,
    gone: Option<&'static str>,
    cut: bool,
}

struct State {
    path_len: usize,
    mframes: Vec<Frame>,
    bframes: Vec<Frame>,
    mviews: Vec<Rc<DirView>>,
    bviews: Vec<Rc<DirView>>,
    gone: Option<&'static str>,
    cut: bool,
    upper_view: Option<Rc<DirView>>,
    names: Vec<Rc<[u8]>>,
    idx: usize,
    pending: std::collections::VecDeque<Task>,
}

pub struct Differ {
    pub layers: Vec<Layer>,
    prefixes: Vec<&'static [u8]>,
    roots: Vec<Rc<Entry>>,
    cache: HashMap<(usize, u64), Vec<Rc<DirView>>>,
    pub out: Out,
    cur: Vec<u8>, // the record path of the directory being walked ("" for the root)
    scratch: Vec<u8>,
    bufs: (Vec<u8>, Vec<u8>), // content comparison, allocated once
    pub big: usize,           // bigdir.BIG: entries past which a directory is listed by name only
    pub cancel: *const i32,
    pub guess: Option<GuessFn>, // --whiteouts auto: the caller's formguess.guess_rules
    pub hold_cap: usize,        // held output past which undecided layers are decided at once
    handback: bool,
}

/// ``guess(layer index) -> 1`` when the layer is in the kernel's form (formguess.guess_rules).
pub type GuessFn = extern "C" fn(i32) -> i32;
/// run()'s error when the scan goes back to the Python differ (nothing written).
pub const HANDBACK: i32 = -2;

#[derive(Clone, Copy, PartialEq)]
enum V {
    Merged,
    Base,
}

impl Differ {
    pub fn new(layers: Vec<Layer>, prefixes: Vec<&'static [u8]>, out: Out) -> Result<Differ, (Vec<u8>, i32)> {
        let mut layers = layers;
        let mut roots = Vec::new();
        for (i, l) in layers.iter_mut().enumerate() {
            match l.root_entry(i) {
                Ok(e) => roots.push(e),
                Err(x) => return Err((l.root.clone(), x)),
            }
        }
        Ok(Differ {
            layers,
            prefixes,
            roots,
            cache: HashMap::new(),
            out,
            cur: Vec::new(),
            scratch: Vec::new(),
            bufs: (vec![0u8; CHUNK], vec![0u8; CHUNK]),
            big: 20000,
            cancel: std::ptr::null(),
            guess: None,
            hold_cap: 32 << 20,
            handback: false,
        })
    }

    fn root_frames(&self, v: V) -> Vec<Frame> {
        let skip = if v == V::Merged { 0 } else { 1 };
        self.roots[skip..].iter().enumerate().map(|(pos, e)| Frame { pos, entry: e.clone() }).collect()
    }

    // -- lazily read entry data ------------------------------------------------------------
    fn xattrs(&mut self, e: &Rc<Entry>) -> Rc<Xattrs> {
        if let Some(x) = &*e.xattrs.borrow() {
            return x.clone();
        }
        let x = Rc::new(self.layers[e.layer].read_xattrs(e));
        *e.xattrs.borrow_mut() = Some(x.clone());
        x
    }

    fn target(&mut self, e: &Rc<Entry>) -> Option<Rc<[u8]>> {
        if e.kind != Kind::Symlink {
            return None;
        }
        if let Some(t) = &*e.target.borrow() {
            return Some(t.clone());
        }
        let t: Rc<[u8]> = Rc::from(&self.layers[e.layer].read_target(e)[..]);
        *e.target.borrow_mut() = Some(t.clone());
        Some(t)
    }

    /// Namespaces.control: the first <ns>key found.
    fn control(&mut self, e: &Rc<Entry>, key: &[u8]) -> Option<Vec<u8>> {
        let x = self.xattrs(e);
        for p in self.prefixes.clone() {
            for (n, v) in x.iter() {
                if n.len() == p.len() + key.len() && n.starts_with(p) && &n[p.len()..] == key {
                    return Some(v.clone());
                }
            }
        }
        None
    }

    fn is_metacopy(&mut self, e: &Rc<Entry>) -> bool {
        e.kind == Kind::File && self.control(e, b"metacopy").is_some()
    }

    fn redirect(&mut self, e: &Rc<Entry>) -> Option<Vec<u8>> {
        if e.kind != Kind::Dir && e.kind != Kind::File {
            return None;
        }
        self.control(e, b"redirect")
    }

    fn is_opaque(&mut self, e: &Rc<Entry>) -> bool {
        e.is_dir() && self.control(e, b"opaque").as_deref() == Some(&b"y"[..])
    }

    /// markers.visible_xattrs, sorted (dict equality is set equality of the pairs).
    fn visible_xattrs(&mut self, e: &Rc<Entry>) -> Vec<(Vec<u8>, Vec<u8>)> {
        let x = self.xattrs(e);
        let mut out = Vec::new();
        'names: for (n, v) in x.iter() {
            for p in self.prefixes.iter() {
                if n.starts_with(p) {
                    let rest = &n[p.len()..];
                    if rest.starts_with(b"overlay.") {
                        let mut name = p.to_vec();
                        name.extend_from_slice(&rest[8..]);
                        out.push((name, v.clone()));
                    }
                    continue 'names;
                }
            }
            out.push((n.clone(), v.clone()));
        }
        out.sort();
        out
    }

    // -- directory views -------------------------------------------------------------------
    fn dirview(&mut self, e: &Rc<Entry>) -> Rc<DirView> {
        let key = (e.layer, e.hash());
        if let Some(list) = self.cache.get(&key) {
            for v in list {
                if e.is_at(&v.node) {
                    return v.clone();
                }
            }
        }
        let node = e.node();
        let read = self.layers[e.layer].read_dir(e.layer, &node, self.big);
        if self.layers[e.layer].wants_guess {
            self.decide(e.layer);
        }
        let listing = match read {
            None => Vec::new(),
            Some(Listing::Full(l)) => l,
            Some(Listing::Names(names, fd)) => {
                let lazy = Lazy { names, fd, recent: HashMap::new(), order: VecDeque::new() };
                let opaque = self.control(e, b"opaque").as_deref() == Some(&b"y"[..]);
                let view = Rc::new(DirView { node, layer: e.layer, entries: Vec::new(), whiteouts: Vec::new(),
                                             opaque, lazy: Some(RefCell::new(lazy)) });
                self.cache.entry(key).or_insert_with(Vec::new).push(view.clone());
                return view;
            }
        };
        let opaque = self.control(e, b"opaque").as_deref() == Some(&b"y"[..]);
        let mut entries = Vec::with_capacity(listing.len());
        let mut whiteouts = Vec::new();
        for entry in listing {
            if entry.kind == Kind::Char && entry.st.rdev_major == 0 && entry.st.rdev_minor == 0 {
                whiteouts.push(("whiteout", entry));
                continue;
            }
            if entry.kind == Kind::File && entry.st.size == 0 && self.control(&entry, b"whiteout").is_some() {
                whiteouts.push(("xwhiteout", entry));
                continue;
            }
            entries.push(entry);
        }
        entries.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        whiteouts.sort_by(|a, b| a.1.name.cmp(&b.1.name));
        let view = Rc::new(DirView { node, layer: e.layer, entries, whiteouts, opaque, lazy: None });
        self.cache.entry(key).or_insert_with(Vec::new).push(view.clone());
        view
    }

    /// NameListing.get: stat-ed on first ask, kept among the last RECENT asked.
    fn lazy_get(&mut self, v: &Rc<DirView>, name: &[u8]) -> Option<Rc<Entry>> {
        let lazy = v.lazy.as_ref().unwrap();
        if let Some(found) = lazy.borrow().recent.get(name) {
            return found.clone();
        }
        let (known, fd) = {
            let l = lazy.borrow();
            (l.names.binary_search_by(|n| (**n).cmp(name)).ok().map(|i| l.names[i].clone()), l.fd)
        };
        let key: Rc<[u8]> = match &known {
            Some(n) => n.clone(),
            None => Rc::from(name),
        };
        let entry = match known {
            Some(n) => self.layers[v.layer].stat_in(v.layer, &v.node, fd, &n),
            None => None,
        };
        let mut l = lazy.borrow_mut();
        l.recent.insert(key.clone(), entry.clone());
        l.order.push_back(key);
        if l.recent.len() > RECENT {
            if let Some(old) = l.order.pop_front() {
                l.recent.remove(&old);
            }
        }
        entry
    }

    /// LazyDirView.own_marker: the marker a name itself is (kernel rules).
    fn own_marker(&mut self, v: &Rc<DirView>, name: &[u8]) -> Option<(&'static str, Rc<Entry>)> {
        let e = self.lazy_get(v, name)?;
        if e.kind == Kind::Char && e.st.rdev_major == 0 && e.st.rdev_minor == 0 {
            return Some(("whiteout", e));
        }
        if e.kind == Kind::File && e.st.size == 0 && self.control(&e, b"whiteout").is_some() {
            return Some(("xwhiteout", e));
        }
        None
    }

    /// view.entries.get(name)
    fn vget(&mut self, v: &Rc<DirView>, name: &[u8]) -> Option<Rc<Entry>> {
        if v.lazy.is_none() {
            return v.full_get(name);
        }
        let e = self.lazy_get(v, name)?;
        if self.own_marker(v, name).is_some() {
            return None;
        }
        Some(e)
    }

    /// view.whiteouts.get(name): the marker that hides a name here.
    fn vhidden(&mut self, v: &Rc<DirView>, name: &[u8]) -> Option<(&'static str, Rc<Entry>)> {
        if v.lazy.is_none() {
            return v.full_whiteout(name);
        }
        self.own_marker(v, name)
    }

    fn forget(&mut self, frames: &[Frame]) {
        for f in frames {
            let key = (f.entry.layer, f.entry.hash());
            let mut empty = false;
            if let Some(list) = self.cache.get_mut(&key) {
                list.retain(|v| !f.entry.is_at(&v.node));
                empty = list.is_empty();
            }
            if empty {
                self.cache.remove(&key);
            }
            let depth = f.entry.depth();
            self.layers[f.entry.layer].forget(depth);
        }
    }

    // -- lookup (resolve.View.lookup) --------------------------------------------------------
    fn lookup(&mut self, v: V, frames: &[Frame], views: Option<&[Rc<DirView>]>, name: &[u8]) -> Option<Resolved> {
        let mut found: Option<Resolved> = None;
        let mut want_rel: Vec<u8> = name.to_vec();
        let mut want_abs: Option<Vec<Vec<u8>>> = None;
        let mut roots: Option<Vec<Frame>> = None;
        let mut i = 0usize;
        loop {
            let frame = match &roots {
                Some(r) => match r.get(i) {
                    Some(f) => f.clone(),
                    None => break,
                },
                None => match frames.get(i) {
                    Some(f) => f.clone(),
                    None => break,
                },
            };
            i += 1;
            let mut stop_here = false;
            let entry: Rc<Entry>;
            if want_abs.is_none() {
                let view = match (views, &roots) {
                    (Some(vs), None) => vs[i - 1].clone(),
                    _ => self.dirview(&frame.entry),
                };
                let e = self.vget(&view, &want_rel);
                let hidden = self.vhidden(&view, &want_rel).is_some();
                if hidden {
                    if e.is_none() {
                        break;
                    }
                    stop_here = true;
                }
                entry = match e {
                    None => continue,
                    Some(e) => e,
                };
            } else {
                let layer = frame.entry.layer;
                let (e, stop, blocked, rewritten) = match self.walk_abs(layer, want_abs.as_ref().unwrap()) {
                    Ok(r) => r,
                    Err(msg) => {
                        // a bad redirect on a directory on the way: the kernel fails the lookup
                        if let Some(f) = &mut found {
                            let label = self.layers[layer].label.clone();
                            f.problems.push(("bad-redirect", format!("{}: {}", label, msg)));
                        }
                        break;
                    }
                };
                if rewritten.is_some() {
                    want_abs = rewritten; // the layers below look the rewritten path up
                }
                match e {
                    None => {
                        if blocked {
                            break;
                        }
                        continue;
                    }
                    Some(e) => {
                        entry = e;
                        stop_here = stop;
                    }
                }
            }
            match &mut found {
                None => {
                    let meta = !entry.is_dir() && !self.is_metacopy(&entry);
                    found = Some(Resolved {
                        top: entry.clone(),
                        pos: frame.pos,
                        frames: Vec::new(),
                        data: None,
                        redirected_from: None,
                        problems: Vec::new(),
                    });
                    if meta {
                        found.as_mut().unwrap().data = Some(entry);
                        break;
                    }
                }
                Some(f) => {
                    if f.top.is_dir() {
                        if !entry.is_dir() {
                            break;
                        }
                    } else {
                        if entry.kind != Kind::File {
                            break;
                        }
                        if !self.is_metacopy(&entry) {
                            found.as_mut().unwrap().data = Some(entry);
                            break;
                        }
                    }
                }
            }
            if want_abs.is_some() && stop_here {
                // an opaque directory above it on the absolute path stops the layers below,
                // unless it carries an absolute redirect itself (ovl_check_redirect resets
                // d->stop); a metacopy file's data is looked up below it whatever its parents
                let own = self.redirect(&entry);
                stop_here = entry.is_dir() && !own.map_or(false, |o| o.starts_with(b"/"));
            }
            if entry.is_dir() {
                found.as_mut().unwrap().frames.push(Frame { pos: frame.pos, entry: entry.clone() });
                if stop_here || self.is_opaque(&entry) {
                    break;
                }
            } else if stop_here {
                break;
            }
            let target = match self.redirect(&entry) {
                None => continue,
                Some(t) => t,
            };
            match parse_redirect(&target) {
                Err(msg) => {
                    let label = self.layers[entry.layer].label.clone();
                    found.as_mut().unwrap().problems.push(("bad-redirect", format!("{}: {}", label, msg)));
                    break;
                }
                Ok(parsed) => {
                    let f = found.as_mut().unwrap();
                    if Rc::ptr_eq(&entry, &f.top) {
                        f.redirected_from = Some(target.clone());
                    }
                    match parsed {
                        Redirect::Abs(parts) => {
                            want_abs = Some(parts);
                            let r = self.root_frames(v);
                            i = r.iter().position(|x| x.pos > frame.pos).unwrap_or(r.len());
                            roots = Some(r);
                        }
                        Redirect::Rel(n) => {
                            if let Some(wa) = &mut want_abs {
                                wa.pop();
                                wa.push(n);
                            } else {
                                want_rel = n;
                            }
                        }
                    }
                }
            }
        }
        if let Some(f) = &mut found {
            if !f.top.is_dir() && f.data.is_none() {
                let label = self.layers[f.top.layer].label.clone();
                f.problems.push(("metacopy-without-data", format!("{}: no lower layer holds the data", label)));
            }
        }
        found
    }

    /// resolve.View._walk_abs: (entry, stop below, blocked here, the path the layers below
    /// look up instead), or the message of a bad redirect on a directory on the way. As the
    /// kernel's ovl_lookup_layer: such a directory's own redirect rewrites the path for the
    /// layers below (an absolute one also lifts the stop an opaque directory above it set),
    /// while this layer's walk goes on below it.
    #[allow(clippy::type_complexity)]
    fn walk_abs(&mut self, layer: usize, path: &[Vec<u8>])
                -> Result<(Option<Rc<Entry>>, bool, bool, Option<Vec<Vec<u8>>>), String> {
        let mut frame_entry = Some(self.roots[layer].clone());
        let mut stop_below = false;
        let mut current: Vec<Vec<u8>> = path.to_vec();
        let mut rewritten: Option<Vec<Vec<u8>>> = None;
        for (depth, name) in path.iter().enumerate() {
            let fe = match &frame_entry {
                Some(fe) if fe.is_dir() => fe.clone(),
                other => return Ok((None, false, other.is_some(), rewritten)),
            };
            let view = self.dirview(&fe);
            let child = self.vget(&view, name);
            let hidden = self.vhidden(&view, name).is_some();
            let child = match child {
                None => return Ok((None, hidden, hidden, rewritten)),
                Some(c) => c,
            };
            if depth != path.len() - 1 {
                if !child.is_dir() {
                    return Ok((None, true, true, rewritten));
                }
                if self.is_opaque(&child) {
                    stop_below = true;
                } else if let Some(target) = self.redirect(&child) {
                    let rest = &path[depth + 1..];
                    match parse_redirect(&target)? {
                        Redirect::Abs(parts) => {
                            current = parts;
                            current.extend(rest.iter().cloned());
                            stop_below = false;
                        }
                        Redirect::Rel(n) => {
                            let at = current.len() - path.len() + depth; // this component in current
                            current.truncate(at);
                            current.push(n);
                            current.extend(rest.iter().cloned());
                        }
                    }
                    rewritten = Some(current.clone());
                }
            }
            frame_entry = Some(child);
        }
        Ok((frame_entry, stop_below, false, rewritten))
    }

    // -- comparing (compare.differences) -----------------------------------------------------
    fn differences(&mut self, top: &Rc<Entry>, data: &Option<Rc<Entry>>, btop: &Rc<Entry>,
                   bdata: &Option<Rc<Entry>>) -> (u8, Vec<String>) {
        if top.kind != btop.kind {
            return (W_TYPE, Vec::new());
        }
        let mut what = 0u8;
        let mut problems = Vec::new();
        match top.kind {
            Kind::File => {
                let same = match (data, bdata) {
                    (Some(a), Some(b)) => same_entry(a, b),
                    _ => false,
                };
                if !same {
                    match self.content_differs(data, bdata) {
                        None => {
                            let names: Vec<String> = [data, bdata].iter()
                                .filter_map(|e| e.as_ref().map(|e| self.layers[e.layer].label.clone()))
                                .collect();
                            let names = if names.is_empty() { "no data".to_string() } else { names.join(", ") };
                            problems.push(format!("content could not be compared: {}", names));
                        }
                        Some(true) => what |= W_CONTENT,
                        Some(false) => {}
                    }
                }
            }
            Kind::Char | Kind::Block => {
                if (top.st.rdev_major, top.st.rdev_minor) != (btop.st.rdev_major, btop.st.rdev_minor) {
                    what |= W_CONTENT;
                }
            }
            Kind::Symlink => {
                if self.target(top) != self.target(btop) {
                    what |= W_TARGET;
                }
            }
            _ => {}
        }
        if top.kind != Kind::Symlink && top.st.mode & 0o7777 != btop.st.mode & 0o7777 {
            what |= W_MODE;
        }
        if (top.st.uid, top.st.gid) != (btop.st.uid, btop.st.gid) {
            what |= W_OWNER;
        }
        if !top.is_dir() && top.st.mtime_ns() != btop.st.mtime_ns() {
            what |= W_MTIME;
        }
        if self.visible_xattrs(top) != self.visible_xattrs(btop) {
            what |= W_XATTRS;
        }
        (what, problems)
    }

    fn content_differs(&mut self, a: &Option<Rc<Entry>>, b: &Option<Rc<Entry>>) -> Option<bool> {
        let (a, b) = match (a, b) {
            (Some(a), Some(b)) => (a.clone(), b.clone()),
            _ => return None,
        };
        if a.st.size != b.st.size {
            return Some(true);
        }
        let fa = self.layers[a.layer].open(&a).ok()?;
        let fb = match self.layers[b.layer].open(&b) {
            Ok(fd) => fd,
            Err(_) => {
                unsafe { sys::close(fa) };
                return None;
            }
        };
        let sparse = (a.st.blocks as i128) * 512 < a.st.size as i128 || (b.st.blocks as i128) * 512 < b.st.size as i128;
        let (ba, bb) = &mut self.bufs;
        let r = if sparse { holes_skipped(fa, fb, a.st.size, ba, bb) } else { streams_differ(fa, fb, ba, bb) };
        unsafe {
            sys::close(fa);
            sys::close(fb);
        }
        r
    }

    // -- the walk (diff.Differ.changes) ------------------------------------------------------
    /// --whiteouts auto: ask the caller which rules the layer was written with
    /// (formguess.guess_rules, through the callback); anything but kernel rules hands the scan
    /// back (nothing was written: the output is held while a layer is undecided).
    fn decide(&mut self, index: usize) {
        let layer = &mut self.layers[index];
        layer.wants_guess = false;
        if !layer.auto {
            return;
        }
        layer.auto = false;
        let kernel = match self.guess {
            Some(f) => f(index as i32) == 1,
            None => false,
        };
        if !kernel {
            self.handback = true;
        }
        if !self.layers.iter().any(|l| l.auto) {
            self.out.hold = false;
        }
    }

    /// Held output past the cap: decide every undecided layer now.
    fn decide_all(&mut self) {
        for i in 0..self.layers.len() {
            if self.layers[i].auto {
                self.decide(i);
            }
        }
    }

    pub fn run(&mut self) -> Result<(), i32> {
        self.out.hold = self.layers.iter().any(|l| l.auto);
        let r = self.walk();
        if self.handback {
            return Err(HANDBACK);
        }
        r
    }

    fn walk(&mut self) -> Result<(), i32> {
        let mroot = self.root_frames(V::Merged);
        let broot = self.root_frames(V::Base);
        if !mroot.is_empty() && !broot.is_empty() && mroot[0].pos == 0 {
            let top = mroot[0].entry.clone();
            let b = broot[0].clone();
            let (what, problems) = self.differences(&top, &None, &b.entry, &None);
            if what != 0 {
                self.record("modified", b"/", &top, what, None, Some(&b.entry), b.pos, None)?;
            }
            for p in problems {
                self.anomaly(b"/", "unreadable", p, None)?;
            }
        }
        let mut stack: Vec<State> = Vec::new();
        let first = Task { name: None, mframes: mroot, bframes: broot, gone: None, cut: false };
        stack.push(self.enter(first));
        let mut ticks = 0u32;
        while let Some(top) = stack.last_mut() {
            if self.handback {
                return Err(HANDBACK);
            }
            if self.out.hold && self.out.held() > self.hold_cap {
                self.decide_all();
                continue;
            }
            ticks += 1;
            if ticks & 1023 == 0 && !self.cancel.is_null() && unsafe { std::ptr::read_volatile(self.cancel) } != 0 {
                return Err(-1);
            }
            if let Some(task) = top.pending.pop_front() {
                let st = self.enter(task);
                stack.push(st);
                continue;
            }
            if top.idx < top.names.len() {
                let name = top.names[top.idx].clone();
                top.idx += 1;
                let mut st = stack.pop().unwrap();
                let r = self.visit(&mut st, &name);
                stack.push(st);
                r?;
                continue;
            }
            let st = stack.pop().unwrap();
            self.forget(&st.mframes);
            self.forget(&st.bframes);
            self.cur.truncate(st.path_len);
        }
        // diff.Differ._layer_errors
        for l in 0..self.layers.len() {
            let errors = std::mem::take(&mut self.layers[l].errors);
            for (where_, why) in errors {
                let path = self.layers[l].inside(&where_);
                let detail = format!("{}: {}", show(&where_), why);
                self.out.write(&Rec::anomaly(&path, "unreadable", detail, None))?;
            }
        }
        Ok(())
    }

    fn enter(&mut self, task: Task) -> State {
        let path_len = self.cur.len();
        if let Some(n) = &task.name {
            self.cur.push(b'/');
            self.cur.extend_from_slice(n);
        }
        let upper_view = if !task.mframes.is_empty() && task.mframes[0].pos == 0 {
            let e = task.mframes[0].entry.clone();
            Some(self.dirview(&e))
        } else {
            None
        };
        let mut mviews = Vec::with_capacity(task.mframes.len());
        for f in &task.mframes {
            mviews.push(self.dirview(&f.entry));
        }
        let mut bviews = Vec::with_capacity(task.bframes.len());
        for f in &task.bframes {
            bviews.push(self.dirview(&f.entry));
        }
        let mut names: Vec<Rc<[u8]>> = Vec::new();
        if mviews.iter().chain(bviews.iter()).any(|v| v.lazy.is_some()) {
            // diff.Differ._names: a merge of every view's sorted names (a superset: lookups decide)
            for v in mviews.iter().chain(bviews.iter()) {
                names.extend(v.sorted_names());
            }
            names.sort_unstable();
            names.dedup();
        } else {
            for v in mviews.iter().chain(bviews.iter()) {
                names.extend(v.entries.iter().map(|e| e.name.clone()));
            }
            if let Some(u) = &upper_view {
                names.extend(u.whiteouts.iter().map(|w| w.1.name.clone()));
            }
            if mviews.len() + bviews.len() > 1 || upper_view.as_ref().map_or(false, |u| !u.whiteouts.is_empty()) {
                names.sort_unstable();
                names.dedup();
            }
        }
        State {
            path_len,
            mframes: task.mframes,
            bframes: task.bframes,
            mviews,
            bviews,
            gone: task.gone,
            cut: task.cut,
            upper_view,
            names,
            idx: 0,
            pending: std::collections::VecDeque::new(),
        }
    }

    fn visit(&mut self, st: &mut State, name: &Rc<[u8]>) -> Result<(), i32> {
        let mut path = std::mem::take(&mut self.scratch);
        path.clear();
        path.extend_from_slice(&self.cur);
        path.push(b'/');
        path.extend_from_slice(name);
        let r = self.visit_path(st, name, &path);
        self.scratch = path;
        r
    }

    fn visit_path(&mut self, st: &mut State, name: &Rc<[u8]>, path: &[u8]) -> Result<(), i32> {
        let mframes = std::mem::take(&mut st.mframes);
        let mviews = std::mem::take(&mut st.mviews);
        let m = if mframes.is_empty() { None } else { self.lookup(V::Merged, &mframes, Some(&mviews), name) };
        st.mframes = mframes;
        st.mviews = mviews;
        let bframes = std::mem::take(&mut st.bframes);
        let bviews = std::mem::take(&mut st.bviews);
        let b = if bframes.is_empty() { None } else { self.lookup(V::Base, &bframes, Some(&bviews), name) };
        st.bframes = bframes;
        st.bviews = bviews;
        for found in [&m, &b] {
            if let Some(f) = found {
                for (kind, detail) in &f.problems {
                    self.anomaly(path, kind, detail.clone(), None)?;
                }
            }
        }
        match (m, b) {
            (None, None) => {
                if let Some(u) = st.upper_view.clone() {
                    if let Some((via, marker)) = self.vhidden(&u, name) {
                        let rest: Vec<Frame> = st.mframes[1..].to_vec();
                        if self.lookup(V::Merged, &rest, None, name).is_none() {
                            let phys = self.layers[marker.layer].physical(&marker);
                            let detail = format!("{} {}: no lower layer holds this path", via, show(&phys));
                            self.anomaly(path, "orphan-whiteout", detail, Some(&marker))?;
                        }
                    }
                }
                Ok(())
            }
            (None, Some(b)) => self.deleted(st, path, name, b),
            (Some(m), None) => self.added(st, path, name, m),
            (Some(m), Some(b)) => self.both(st, path, name, m, b),
        }
    }

    fn deleted(&mut self, st: &mut State, path: &[u8], name: &Rc<[u8]>, b: Resolved) -> Result<(), i32> {
        let via = if let Some(g) = st.gone {
            g
        } else if let Some(w) = match st.upper_view.clone() {
            Some(u) => self.vhidden(&u, name).map(|w| w.0),
            None => None,
        } {
            if st.cut || st.upper_view.as_ref().unwrap().opaque {
                "opaque"
            } else {
                w
            }
        } else {
            "opaque"
        };
        self.record("deleted", path, &b.top, 0, Some(via), Some(&b.top), b.pos, None)?;
        if b.top.is_dir() {
            st.pending.push_back(Task { name: Some(name.clone()), mframes: Vec::new(), bframes: b.frames,
                                        gone: Some("parent"), cut: false });
        }
        Ok(())
    }

    fn added(&mut self, st: &mut State, path: &[u8], name: &Rc<[u8]>, m: Resolved) -> Result<(), i32> {
        let top = m.top.clone();
        let renamed = renamed_from(path, &m);
        let from_lower = top.layer != 0;
        let shadow = if from_lower { Some(&top) } else { None };
        self.record("added", path, &top, 0, None, shadow, m.pos.wrapping_sub(1), renamed)?;
        self.lookalike(path, name, &top)?;
        if top.is_dir() {
            st.pending.push_back(Task { name: Some(name.clone()), mframes: m.frames, bframes: Vec::new(),
                                        gone: None, cut: false });
        }
        Ok(())
    }

    fn both(&mut self, st: &mut State, path: &[u8], name: &Rc<[u8]>, m: Resolved, b: Resolved) -> Result<(), i32> {
        let top = m.top.clone();
        let (what, problems) = if same_entry(&top, &b.top) {
            if !top.is_dir() {
                return Ok(());
            }
            (0u8, Vec::new())
        } else {
            self.differences(&top, &m.data, &b.top, &b.data)
        };
        for p in problems {
            self.anomaly(path, "unreadable", p, None)?;
        }
        if what != 0 {
            let renamed = renamed_from(path, &m);
            self.record("modified", path, &top, what, None, Some(&b.top), b.pos, renamed)?;
            self.lookalike(path, name, &top)?;
        }
        if what == W_TYPE {
            if b.top.is_dir() {
                st.pending.push_back(Task { name: Some(name.clone()), mframes: Vec::new(), bframes: b.frames,
                                            gone: Some("type-change"), cut: false });
            }
            if top.is_dir() {
                st.pending.push_back(Task { name: Some(name.clone()), mframes: m.frames, bframes: Vec::new(),
                                            gone: None, cut: false });
            }
            return Ok(());
        }
        if top.is_dir() && !same_keys(&m.frames, &b.frames) {
            let upper_dir = if !m.frames.is_empty() && m.frames[0].pos == 0 { Some(m.frames[0].entry.clone()) } else { None };
            let cut = st.cut || match upper_dir {
                Some(u) => self.is_opaque(&u),
                None => false,
            };
            st.pending.push_back(Task { name: Some(name.clone()), mframes: m.frames, bframes: b.frames,
                                        gone: None, cut });
        }
        Ok(())
    }

    // -- records -----------------------------------------------------------------------------
    #[allow(clippy::too_many_arguments)]
    fn record(&mut self, change: &'static str, path: &[u8], entry: &Rc<Entry>, what: u8, via: Option<&'static str>,
              shadow: Option<&Rc<Entry>>, shadow_pos: usize, renamed_from: Option<Vec<u8>>) -> Result<(), i32> {
        let metacopy = self.is_metacopy(entry);
        let lower_path = shadow.map(|s| self.layers[s.layer].physical(s));
        let upper_path = if entry.layer == 0 { Some(self.layers[0].physical(entry)) } else { None };
        let target = self.target(entry);
        let meta = Meta {
            size: entry.st.size,
            mode: entry.st.mode & 0o7777,
            uid: entry.st.uid,
            gid: entry.st.gid,
            mtime_ns: entry.st.mtime_ns(),
        };
        let layer_ref = shadow.map(|_| shadow_pos + 1);
        let (was, was_target) = match shadow {
            Some(s) if change == "modified" => (Some(s), self.target(s)),
            _ => (None, None),
        };
        let lower = was.map(|s| Lower {
            meta: Meta {
                size: s.st.size,
                mode: s.st.mode & 0o7777,
                uid: s.st.uid,
                gid: s.st.gid,
                mtime_ns: s.st.mtime_ns(),
            },
            target: was_target.as_deref(),
        });
        let rec = Rec {
            path,
            change,
            what,
            via,
            lower_path: lower_path.as_deref(),
            lower_layer: layer_ref,
            upper_path: upper_path.as_deref(),
            meta: Some(meta),
            kind: Some(entry.kind.text()),
            target: target.as_deref(),
            renamed_from: renamed_from.as_deref(),
            metacopy,
            anomaly: None,
            detail: None,
            lower,
        };
        self.out.write(&rec)
    }

    fn anomaly(&mut self, path: &[u8], kind: &'static str, detail: String, upper: Option<&Rc<Entry>>) -> Result<(), i32> {
        let up = upper.map(|u| self.layers[u.layer].physical(u));
        let mut rec = Rec::anomaly(path, kind, detail, up.as_deref());
        rec.kind = upper.map(|u| u.kind.text());
        self.out.write(&rec)
    }

    fn lookalike(&mut self, path: &[u8], name: &[u8], e: &Rc<Entry>) -> Result<(), i32> {
        if !(name.starts_with(WH_PREFIX) && e.layer == 0) {
            return Ok(());
        }
        self.anomaly(path, "whiteout-lookalike",
                     "kernel rules: a .wh.* name in an upperdir is an ordinary file (use --whiteouts oci for a layer in OCI/AUFS form, fuse for a fuse-overlayfs upper)".to_string(),
                     Some(e))
    }
}

fn same_keys(a: &[Frame], b: &[Frame]) -> bool {
    a.len() == b.len() && a.iter().zip(b.iter()).all(|(x, y)| same_entry(&x.entry, &y.entry))
}

/// diff.Differ._renamed_from
fn renamed_from(path: &[u8], m: &Resolved) -> Option<Vec<u8>> {
    let value = m.redirected_from.as_ref()?;
    let mut end = value.len();
    while end > 0 && value[end - 1] == 0 {
        end -= 1;
    }
    let value = &value[..end];
    if value.starts_with(b"/") {
        return Some(value.to_vec());
    }
    let cut = path.iter().rposition(|&c| c == b'/').unwrap_or(0);
    let mut out = path[..cut + 1].to_vec();
    out.extend_from_slice(value);
    Some(out)
}

/// bytes.decode("utf-8", "backslashreplace")
pub fn show(raw: &[u8]) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    loop {
        match std::str::from_utf8(rest) {
            Ok(s) => {
                out.push_str(s);
                return out;
            }
            Err(e) => {
                let good = e.valid_up_to();
                out.push_str(unsafe { std::str::from_utf8_unchecked(&rest[..good]) });
                let bad = e.error_len().unwrap_or(rest.len() - good);
                for &c in &rest[good..good + bad] {
                    out.push_str(&format!("\\x{:02x}", c));
                }
                rest = &rest[good + bad..];
            }
        }
    }
}

fn streams_differ(fa: i32, fb: i32, ba: &mut [u8], bb: &mut [u8]) -> Option<bool> {
    loop {
        let na = sys::read_full(fa, ba).ok()?;
        let nb = sys::read_full(fb, bb).ok()?;
        if ba[..na] != bb[..nb] {
            return Some(true);
        }
        if na == 0 {
            return Some(false);
        }
    }
}

fn next_data(fd: i32, offset: i64, size: i64) -> i64 {
    match sys::seek_data(fd, offset) {
        Ok(x) => x,
        Err(e) if e == sys::ENXIO => size,
        Err(_) => offset,
    }
}

/// compare._holes_skipped
fn holes_skipped(fa: i32, fb: i32, size: i64, ba: &mut [u8], bb: &mut [u8]) -> Option<bool> {
    let mut offset = 0i64;
    while offset < size {
        let start = next_data(fa, offset, size).min(next_data(fb, offset, size));
        if start >= size {
            return Some(false);
        }
        let want = (CHUNK as i64).min(size - start) as usize;
        let na = sys::pread_once(fa, &mut ba[..want], start).ok()?;
        let nb = sys::pread_once(fb, &mut bb[..want], start).ok()?;
        if ba[..na] != bb[..nb] {
            return Some(true);
        }
        if na == 0 {
            return Some(false);
        }
        offset = start + na as i64;
    }
    Some(false)
}
