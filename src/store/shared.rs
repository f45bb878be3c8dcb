//! A loaded state file's bytes, and raw JSON values that borrow them instead of copying.
//!
//! Why: `azure-vnet.json` grows with the pods, and ADD and DEL read it whole, keep its endpoint
//! records as the JSON text they were read as and write them back. A plugin lives for one
//! operation, so every page of memory it touches is a fresh page fault: reading the file into
//! a heap buffer and then copying each record into its own allocation touched the file's size
//! in fresh pages twice, page by page. Here a large file is read into memory the kernel
//! populates in one call, and each record is a view of that buffer, which it keeps alive.
//! The buffer is anonymous memory holding a copy, never a mapping of the file: a file
//! truncated in place while mapped would kill the plugin with SIGBUS instead of an error.

use std::cell::RefCell;
use std::fs::File;
use std::io::Read;
use std::num::NonZeroUsize;
use std::ptr::NonNull;
use std::sync::Arc;

use nix::sys::mman::{mmap_anonymous, munmap, MapFlags, ProtFlags};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

/// Files smaller than this are read into an ordinary heap buffer (the allocator's own pages).
const POPULATE_FROM: usize = 64 << 10;

/// A state file's bytes.
pub(crate) struct Bytes(Buf);

enum Buf {
    Heap(Vec<u8>),
    /// An anonymous private mapping of `mapped` bytes, of which the first `len` were filled
    /// once and are never written again.
    Pages {
        ptr: NonNull<u8>,
        len: usize,
        mapped: usize,
    },
}

// SAFETY: `Pages` is memory this value owns exclusively and never writes after it is filled;
// shared reads from any thread are sound, and it is unmapped once, on drop.
unsafe impl Send for Bytes {}
unsafe impl Sync for Bytes {}

impl Bytes {
    pub fn from_vec(v: Vec<u8>) -> Bytes {
        Bytes(Buf::Heap(v))
    }

    /// Read `file`, which `stat` said is `len` bytes long, to its end.
    pub fn read(file: &File, len: usize, limit: u64) -> std::io::Result<Bytes> {
        if len >= POPULATE_FROM {
            if let Some(b) = Bytes::read_populated(file, len)? {
                return Ok(b);
            }
        }
        let mut v = Vec::with_capacity(len);
        file.take(limit).read_to_end(&mut v)?;
        Ok(Bytes(Buf::Heap(v)))
    }

    /// `None` when the file is longer than `len` (it changed since the `stat`) or the memory
    /// cannot be mapped: the caller reads it the ordinary way.
    fn read_populated(file: &File, len: usize) -> std::io::Result<Option<Bytes>> {
        use std::os::unix::fs::FileExt;
        let Some(size) = NonZeroUsize::new(len) else {
            return Ok(None);
        };
        // SAFETY: a fresh anonymous mapping, not aliased by anything else.
        let mapped = unsafe {
            mmap_anonymous(
                None,
                size,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_PRIVATE | MapFlags::MAP_POPULATE,
            )
        };
        // No mapping (memory limits): the ordinary read may still fit.
        let Ok(ptr) = mapped.map(|p| p.cast::<u8>()) else {
            return Ok(None);
        };
        let mut bytes = Bytes(Buf::Pages {
            ptr,
            len,
            mapped: len,
        });
        // SAFETY: the mapping is `len` bytes, writable, and only this function holds it.
        let buf = unsafe { std::slice::from_raw_parts_mut(ptr.as_ptr(), len) };
        let mut filled = 0;
        while filled < len {
            // At offsets, so that the caller's fallback reads from where the file was.
            match file.read_at(&mut buf[filled..], filled as u64) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let mut more = [0u8; 1];
        if filled == len && file.read_at(&mut more, len as u64)? != 0 {
            return Ok(None);
        }
        if let Buf::Pages { len, .. } = &mut bytes.0 {
            *len = filled; // shorter: truncated since the `stat`; what was read is the file
        }
        Ok(Some(bytes))
    }
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match &self.0 {
            Buf::Heap(v) => v,
            // SAFETY: `len` bytes of the mapping were filled by `read_populated`.
            Buf::Pages { ptr, len, .. } => unsafe {
                std::slice::from_raw_parts(ptr.as_ptr(), *len)
            },
        }
    }
}

impl Drop for Bytes {
    fn drop(&mut self) {
        if let Buf::Pages { ptr, mapped, .. } = self.0 {
            // SAFETY: our own mapping, unmapped once, whole. Nothing borrows it any more
            // (views hold an `Arc<Bytes>`).
            let _ = unsafe { munmap(ptr.cast(), mapped) };
        }
    }
}

thread_local! {
    /// The buffer being parsed on this thread, if any (see [`parsing`]).
    static SOURCE: RefCell<Option<Arc<Bytes>>> = const { RefCell::new(None) };
}

/// Run `parse` (which deserializes from `src`) with `src` as the buffer that [`RawJson`]
/// values found in it may borrow.
pub(crate) fn parsing<R>(src: &Arc<Bytes>, parse: impl FnOnce(&[u8]) -> R) -> R {
    struct Reset(Option<Arc<Bytes>>);
    impl Drop for Reset {
        fn drop(&mut self) {
            let prev = self.0.take();
            SOURCE.with(|s| *s.borrow_mut() = prev);
        }
    }
    let prev = SOURCE.with(|s| s.borrow_mut().replace(src.clone()));
    let _reset = Reset(prev);
    parse(src)
}

/// A JSON value kept as its text: a view of the state file's buffer when it was read from one
/// (see [`parsing`]), else its own copy.
#[derive(Clone)]
pub(crate) struct RawJson(Raw);

#[derive(Clone)]
enum Raw {
    Owned(Box<RawValue>),
    /// `raw` points into `_src`, which this value keeps alive; it never outlives it, since
    /// both are private to this value (the `'static` is never handed out).
    Shared {
        _src: Arc<Bytes>,
        raw: &'static RawValue,
    },
}

impl RawJson {
    pub fn get(&self) -> &str {
        match &self.0 {
            Raw::Owned(b) => b.get(),
            Raw::Shared { raw, .. } => raw.get(),
        }
    }

    pub fn from_string(json: String) -> serde_json::Result<RawJson> {
        RawValue::from_string(json).map(|b| RawJson(Raw::Owned(b)))
    }

    fn of(raw: &RawValue) -> RawJson {
        let text = raw.get().as_bytes();
        let shared = SOURCE.with(|s| {
            s.borrow().as_ref().and_then(|src| {
                let within = src.as_ptr_range();
                let inside = within.start <= text.as_ptr()
                    && text.as_ptr_range().end <= within.end
                    && !text.is_empty();
                inside.then(|| src.clone())
            })
        });
        match shared {
            Some(src) => {
                // SAFETY: `raw` lies within `src`'s bytes (checked above), which are immutable
                // and live as long as the `Arc` stored beside it.
                let raw: &'static RawValue = unsafe { &*(raw as *const RawValue) };
                RawJson(Raw::Shared { _src: src, raw })
            }
            None => RawJson(Raw::Owned(raw.to_owned())),
        }
    }
}

impl std::fmt::Debug for RawJson {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.get())
    }
}

impl PartialEq for RawJson {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}

impl Serialize for RawJson {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.0 {
            Raw::Owned(b) => b.serialize(s),
            Raw::Shared { raw, .. } => raw.serialize(s),
        }
    }
}

/// Needs a deserializer that can lend its input (`serde_json::from_str`/`from_slice`): the
/// state files are always parsed from their bytes.
impl<'de> Deserialize<'de> for RawJson {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <&'de RawValue>::deserialize(d).map(RawJson::of)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn values_borrow_the_buffer_they_were_parsed_from_and_keep_it() {
        let text = format!(
            r#"{{"a":{{"x":1}},"b":[1,2],"pad":"{}"}}"#,
            "p".repeat(POPULATE_FROM)
        );
        let dir = std::env::temp_dir().join(format!("azv-shared-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f.json");
        std::fs::File::create(&path)
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let file = File::open(&path).unwrap();
        let bytes = Arc::new(Bytes::read(&file, text.len(), u64::MAX).unwrap());
        assert!(
            matches!(bytes.0, Buf::Pages { .. }),
            "a large file is populated"
        );
        assert_eq!(&bytes[..], text.as_bytes());

        let map: std::collections::BTreeMap<String, RawJson> =
            parsing(&bytes, |b| serde_json::from_slice(b).unwrap());
        let a = map["a"].clone();
        assert!(matches!(a.0, Raw::Shared { .. }));
        // The buffer, the map's three values and the clone.
        assert_eq!(Arc::strong_count(&bytes), 1 + 3 + 1, "each value holds it");
        drop(map);
        drop(bytes);
        // The buffer lives while a value does.
        assert_eq!(a.get(), r#"{"x":1}"#);
        assert_eq!(serde_json::to_string(&a).unwrap(), r#"{"x":1}"#);

        // Parsed from anything else: a copy.
        let own: RawJson = serde_json::from_str(r#"{"y":2}"#).unwrap();
        assert!(matches!(own.0, Raw::Owned(_)));
        SOURCE.with(|s| assert!(s.borrow().is_none(), "reset after parsing"));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_file_that_changed_since_its_stat_is_read_whole() {
        let dir = std::env::temp_dir().join(format!("azv-shared2-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f");
        let data = vec![b'x'; POPULATE_FROM * 2];
        std::fs::write(&path, &data).unwrap();
        let file = File::open(&path).unwrap();
        // (stat length, what must come back)
        let table = [
            (data.len(), data.len()),        // as stat said
            (POPULATE_FROM, data.len()),     // grew: read the ordinary way, to the end
            (data.len() + 4096, data.len()), // shrank: what is there
        ];
        for (said, want) in table {
            let f = file.try_clone().unwrap();
            std::io::Seek::rewind(&mut &f).unwrap();
            let b = Bytes::read(&f, said, u64::MAX).unwrap();
            assert_eq!(b.len(), want, "stat said {said}");
            assert!(b.iter().all(|&c| c == b'x'));
        }
        std::fs::remove_dir_all(dir).unwrap();
    }
}
