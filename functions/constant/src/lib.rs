//! constant: the benchmark function (edge ABI).
//!
//! Every request gets `200`, `content-type: text/plain`, body `ok`: the same
//! bytes the baseline ASGI app in the benchmarks returns. It deliberately does
//! not use edge-sdk or std: the request envelope is never decoded, the
//! response envelope is a precomputed constant and the module imports
//! nothing, so a benchmark measures the runner rather than the guest.
#![cfg_attr(target_arch = "wasm32", no_std)]

/// `status=200, header_count=1, "content-type"="text/plain", body="ok"`.
static RESPONSE: [u8; 44] = *b"\xc8\x00\x00\x00\
\x01\x00\x00\x00\
\x0c\x00\x00\x00content-type\
\x0a\x00\x00\x00text/plain\
\x02\x00\x00\x00ok";

#[cfg(target_arch = "wasm32")]
mod exports {
    use core::arch::wasm32::{memory_grow, memory_size};
    use core::sync::atomic::{AtomicUsize, Ordering};

    const PAGE: usize = 65536;

    // Request buffer: a region at the end of linear memory, obtained with
    // memory.grow on first use and grown (never shrunk) when a larger
    // request arrives. Nothing else in this module allocates.
    static BUF_PTR: AtomicUsize = AtomicUsize::new(0);
    static BUF_LEN: AtomicUsize = AtomicUsize::new(0);

    /// Returns a writable buffer of `size` bytes, or 0 if memory cannot grow.
    /// The buffer is reused: it is valid until the next `edge_alloc`.
    #[no_mangle]
    pub extern "C" fn edge_alloc(size: i32) -> i32 {
        let size = (size as u32 as usize).max(1);
        if BUF_LEN.load(Ordering::Relaxed) >= size {
            return BUF_PTR.load(Ordering::Relaxed) as i32;
        }
        let pages = size / PAGE + usize::from(size % PAGE != 0); // no overflow near 4 GiB
        if memory_grow(0, pages) == usize::MAX {
            return 0;
        }
        // Use the pages just added; the old buffer is abandoned (grows are
        // rare: only when a request is larger than any before it).
        let ptr = (memory_size(0) - pages) * PAGE;
        BUF_PTR.store(ptr, Ordering::Relaxed);
        BUF_LEN.store(pages * PAGE, Ordering::Relaxed);
        ptr as i32
    }

    /// Ignores the request and returns the constant response envelope.
    #[no_mangle]
    pub extern "C" fn edge_handle(_ptr: i32, _len: i32) -> i64 {
        let ptr = super::RESPONSE.as_ptr() as usize as u64;
        ((ptr << 32) | super::RESPONSE.len() as u64) as i64
    }

    #[panic_handler]
    fn panic(_: &core::panic::PanicInfo) -> ! {
        core::arch::wasm32::unreachable()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn envelope_is_well_formed() {
        let mut want = Vec::new();
        want.extend_from_slice(&200u32.to_le_bytes());
        want.extend_from_slice(&1u32.to_le_bytes());
        for s in [&b"content-type"[..], b"text/plain", b"ok"] {
            want.extend_from_slice(&(s.len() as u32).to_le_bytes());
            want.extend_from_slice(s);
        }
        assert_eq!(&super::RESPONSE[..], &want[..]);
    }
}
