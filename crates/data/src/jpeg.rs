//! JPEG decoding with libjpeg-turbo, as PIL decodes: `jpeg.c` drives the libjpeg
//! API with PIL's settings (the library's defaults: accurate integer IDCT, fancy
//! upsampling), and this turns its output into RGB as PIL's `convert("RGB")`
//! does (grey replicated; CMYK read with Adobe's inverted convention, as PIL
//! always assumes, then PIL's CMYK -> RGB). Scaled decoding at 1/2, 1/4 or 1/8
//! is PIL's `Image.draft`. The orientation of a JPEG's EXIF block is read here
//! too (applied only on request: [`crate::RgbImage::apply_orientation`]).

use std::ffi::{c_char, c_int, c_ulong, c_void};

unsafe extern "C" {
    fn clip_jpeg_open(
        data: *const u8,
        len: c_ulong,
        out: *mut *mut c_void,
        width: *mut c_int,
        height: *mut c_int,
        components: *mut c_int,
        err: *mut c_char,
        err_len: c_int,
    ) -> c_int;
    fn clip_jpeg_start(
        handle: *mut c_void,
        denom: c_int,
        width: *mut c_int,
        height: *mut c_int,
        channels: *mut c_int,
        err: *mut c_char,
        err_len: c_int,
    ) -> c_int;
    fn clip_jpeg_read(
        handle: *mut c_void,
        out: *mut u8,
        out_len: c_ulong,
        err: *mut c_char,
        err_len: c_int,
    ) -> c_int;
    fn clip_jpeg_close(handle: *mut c_void);
    fn clip_jpeg_version() -> c_int;
}

const ERR_LEN: usize = 256;

/// Calls `f` with an error buffer; a non-zero code is the buffer's message.
fn call(f: impl FnOnce(*mut c_char, c_int) -> c_int) -> Result<(), String> {
    let mut err = [0 as c_char; ERR_LEN];
    if f(err.as_mut_ptr(), ERR_LEN as c_int) == 0 {
        return Ok(());
    }
    let bytes: Vec<u8> = err
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    Err(String::from_utf8_lossy(&bytes).trim().to_string())
}

/// A decoder with a header read; closed when dropped.
struct Decoder {
    handle: *mut c_void,
}

impl Drop for Decoder {
    fn drop(&mut self) {
        // SAFETY: a handle clip_jpeg_open returned, closed once.
        unsafe { clip_jpeg_close(self.handle) }
    }
}

/// The libjpeg-turbo version decoding uses (`2.1.5`).
pub fn libjpeg_turbo_version() -> String {
    // SAFETY: returns a constant.
    let v = unsafe { clip_jpeg_version() };
    format!("{}.{}.{}", v / 1_000_000, v / 1000 % 1000, v % 1000)
}

/// Whether `bytes` look like a JPEG (its SOI marker).
pub fn is_jpeg(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0xFF, 0xD8])
}

/// Decodes the JPEG `bytes` at the largest of 1/8, 1/4 and 1/2 of each side not
/// above `reduction(width, height)` (of the stored size; 1 or less: full size),
/// to RGB: `(width, height, interleaved RGB bytes)`.
pub fn decode(
    bytes: &[u8],
    reduction: impl Fn(usize, usize) -> usize,
) -> Result<(usize, usize, Vec<u8>), String> {
    let (mut handle, mut w, mut h, mut components) = (std::ptr::null_mut(), 0, 0, 0);
    // SAFETY: `bytes` outlives the decoder (it is only read while `decode`
    // runs); the out-pointers are live; the buffer is `call`'s.
    call(|err, len| unsafe {
        clip_jpeg_open(
            bytes.as_ptr(),
            bytes.len() as c_ulong,
            &mut handle,
            &mut w,
            &mut h,
            &mut components,
            err,
            len,
        )
    })?;
    let d = Decoder { handle };
    if w <= 0 || h <= 0 {
        return Err(format!("the image has no pixels ({w}x{h})"));
    }
    let allowed = reduction(w as usize, h as usize);
    let denom = [8, 4, 2].into_iter().find(|&k| k <= allowed).unwrap_or(1);
    let (mut ow, mut oh, mut channels) = (0, 0, 0);
    // SAFETY: a live decoder and out-pointers; the buffer is `call`'s.
    call(|err, len| unsafe {
        clip_jpeg_start(
            d.handle,
            denom as c_int,
            &mut ow,
            &mut oh,
            &mut channels,
            err,
            len,
        )
    })?;
    let (ow, oh, channels) = (ow as usize, oh as usize, channels as usize);
    let mut raw = vec![0u8; ow * oh * channels];
    // SAFETY: `raw` holds the `ow x oh x channels` bytes the decoder writes.
    call(|err, len| unsafe {
        clip_jpeg_read(d.handle, raw.as_mut_ptr(), raw.len() as c_ulong, err, len)
    })?;
    drop(d);
    let data = match channels {
        3 => raw,
        1 => raw.iter().flat_map(|&g| [g; 3]).collect(),
        4 => raw.chunks_exact(4).flat_map(cmyk_to_rgb).collect(),
        n => return Err(format!("{n} channels per pixel")),
    };
    Ok((ow, oh, data))
}

/// PIL's `MULDIV255`: `a * b / 255`, rounded.
fn muldiv255(a: i32, b: i32) -> i32 {
    let t = a * b + 128;
    ((t >> 8) + t) >> 8
}

/// A stored CMYK pixel (Adobe's inverted convention, PIL's `CMYK;I`) to RGB as
/// PIL's `cmyk2rgb`: `255 - k' - c' (255 - k') / 255` per channel of the inverted
/// values.
fn cmyk_to_rgb(p: &[u8]) -> [u8; 3] {
    let [c, m, y, k] = [p[0], p[1], p[2], p[3]].map(|v| i32::from(255 - v));
    let nk = 255 - k;
    [c, m, y].map(|v| (nk - muldiv255(v, nk)).clamp(0, 255) as u8)
}

/// The orientation (1 to 8) in a JPEG's EXIF block (APP1 `Exif`), if it has one.
pub fn exif_orientation(bytes: &[u8]) -> Option<u16> {
    let mut i = 2;
    while i + 4 <= bytes.len() && bytes[i] == 0xFF {
        let marker = bytes[i + 1];
        // Start of scan or end of image: no more metadata.
        if marker == 0xDA || marker == 0xD9 {
            return None;
        }
        let len = usize::from(u16::from_be_bytes([bytes[i + 2], bytes[i + 3]]));
        let body = bytes.get(i + 4..i + 2 + len)?;
        if marker == 0xE1 && body.starts_with(b"Exif\0\0") {
            return tiff_orientation(&body[6..]);
        }
        i += 2 + len;
    }
    None
}

/// Tag 0x0112 of IFD0 of a TIFF block.
fn tiff_orientation(t: &[u8]) -> Option<u16> {
    let big = match t.get(..2)? {
        b"MM" => true,
        b"II" => false,
        _ => return None,
    };
    let u16_at = |o: usize| -> Option<u16> {
        let b = [*t.get(o)?, *t.get(o + 1)?];
        Some(if big {
            u16::from_be_bytes(b)
        } else {
            u16::from_le_bytes(b)
        })
    };
    let u32_at = |o: usize| -> Option<u32> {
        let b = [*t.get(o)?, *t.get(o + 1)?, *t.get(o + 2)?, *t.get(o + 3)?];
        Some(if big {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        })
    };
    let ifd = u32_at(4)? as usize;
    let entries = usize::from(u16_at(ifd)?);
    (0..entries)
        .map(|e| ifd + 2 + 12 * e)
        .find(|&at| u16_at(at) == Some(0x0112))
        .and_then(|at| u16_at(at + 8))
        .filter(|o| (1..=8).contains(o))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmyk_converts_as_pils_cmyk2rgb() {
        // Stored (inverted) values: 255 is no ink.
        assert_eq!(cmyk_to_rgb(&[255, 255, 255, 255]), [255, 255, 255]);
        assert_eq!(cmyk_to_rgb(&[0, 0, 0, 0]), [0, 0, 0]);
        // c' = 55, k' = 100: nk = 155, 155 - round(55 * 155 / 255) = 155 - 33.
        assert_eq!(cmyk_to_rgb(&[200, 255, 255, 155]), [122, 155, 155]);
    }

    #[test]
    fn the_orientation_is_read_from_either_byte_order() {
        let jpeg = |tiff: &[u8]| {
            let mut b = vec![0xFF, 0xD8, 0xFF, 0xE1];
            let len = (2 + 6 + tiff.len()) as u16;
            b.extend(len.to_be_bytes());
            b.extend(b"Exif\0\0");
            b.extend(tiff);
            b.extend([0xFF, 0xDA, 0, 2]);
            b
        };
        let le = [
            b'I', b'I', 42, 0, 8, 0, 0, 0, 1, 0, 0x12, 0x01, 3, 0, 1, 0, 0, 0, 6, 0, 0, 0,
        ];
        let be = [
            b'M', b'M', 0, 42, 0, 0, 0, 8, 0, 1, 0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, 8, 0, 0,
        ];
        assert_eq!(exif_orientation(&jpeg(&le)), Some(6));
        assert_eq!(exif_orientation(&jpeg(&be)), Some(8));
        assert_eq!(exif_orientation(&[0xFF, 0xD8, 0xFF, 0xDA, 0, 2]), None);
        // A block cut short is no orientation, not a panic.
        assert_eq!(exif_orientation(&jpeg(&le)[..20]), None);
    }
}
