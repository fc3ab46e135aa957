//! Images to pixel values as BLIP's image processor makes them (`BlipImageProcessor`, PIL
//! backend): decode PNG / JPEG, convert to RGB, resize with PIL's bicubic filter, rescale by
//! 1/255, normalise per channel with the checkpoint's mean and std.
//!
//! The resize follows PIL's `Image.resize(…, BICUBIC)` on 8-bit images: a separable
//! convolution, one pass per axis (in Pillow's order, see [`resize_bicubic`]), each pass
//! rounding to 8 bits and clipping.
//! The kernel is the cubic with `a = -0.5`; when downscaling its support widens by the scale
//! factor (antialiasing). The weights of each output pixel are normalised to sum 1 and turned
//! into 22-bit fixed point, and each pass accumulates in integers with a half for rounding, as
//! PIL does, so the 8-bit result is the same pixel for pixel.
//!
//! Decoding bounds the work before it starts: the file's size, the dimensions in its header
//! (0×0 and more than [`MAX_SIDE`] pixels a side are refused) and the decoder's allocation.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use image::{ImageFormat, ImageReader, Limits};

use crate::config::PreprocessorConfig;

/// The longest side accepted, in pixels.
pub const MAX_SIDE: u32 = 16384;
/// The largest image file read, in bytes.
pub const MAX_FILE_BYTES: u64 = 256 << 20;
/// The most memory the decoder may allocate, in bytes.
pub const MAX_DECODE_BYTES: u64 = 1 << 30;

/// Why an image could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The file could not be read.
    #[error("cannot read image {path}: {reason}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Not a PNG or JPEG file, or a damaged one.
    #[error("{path}: {reason}")]
    Decode {
        /// The file.
        path: PathBuf,
        /// What the decoder said.
        reason: String,
    },
    /// The dimensions are unusable.
    #[error("{path}: the image is {width}x{height} pixels: {reason}")]
    Dimensions {
        /// The file.
        path: PathBuf,
        /// Columns in the header.
        width: u32,
        /// Rows in the header.
        height: u32,
        /// Why.
        reason: String,
    },
}

/// An 8-bit RGB image, rows top to bottom, 3 bytes a pixel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rgb8 {
    /// Columns.
    pub width: usize,
    /// Rows.
    pub height: usize,
    /// `height * width * 3` bytes.
    pub data: Vec<u8>,
}

/// Reads a PNG or JPEG file as 8-bit RGB as transformers' `convert_to_rgb` makes it: grey
/// replicated, transparency composited onto white, 16-bit reduced to 8.
pub fn read_rgb(path: &Path) -> Result<Rgb8, ImageError> {
    let io = |reason: String| ImageError::Io {
        path: path.to_path_buf(),
        reason,
    };
    let len = std::fs::metadata(path)
        .map_err(|e| io(e.to_string()))?
        .len();
    if len > MAX_FILE_BYTES {
        return Err(io(format!(
            "{len} bytes, more than the {MAX_FILE_BYTES} an image may have"
        )));
    }
    let bytes = std::fs::read(path).map_err(|e| io(e.to_string()))?;
    decode_rgb(&bytes, path)
}

/// Decodes PNG or JPEG bytes (`path` names them in messages).
pub fn decode_rgb(bytes: &[u8], path: &Path) -> Result<Rgb8, ImageError> {
    let decode = |reason: String| ImageError::Decode {
        path: path.to_path_buf(),
        reason,
    };
    let format =
        image::guess_format(bytes).map_err(|_| decode("not a PNG or JPEG image".into()))?;
    if !matches!(format, ImageFormat::Png | ImageFormat::Jpeg) {
        return Err(decode(format!(
            "a {format:?} image: only PNG and JPEG are supported"
        )));
    }
    let reader = || {
        let mut r = ImageReader::new(Cursor::new(bytes));
        r.set_format(format);
        r
    };
    // A JPEG cut short still decodes (the missing scans come out grey): its end-of-image
    // marker must be there.
    if format == ImageFormat::Jpeg && !bytes.ends_with(&[0xFF, 0xD9]) {
        return Err(decode(
            "the JPEG data is truncated (no end-of-image marker)".into(),
        ));
    }
    // The header's dimensions first, before anything is allocated for the pixels: a PNG's
    // IHDR chunk holds them at a fixed place, the decoder reads them for JPEG.
    let (width, height) = match (format, bytes.get(12..24)) {
        (ImageFormat::Png, Some(ihdr)) if &ihdr[..4] == b"IHDR" => (
            u32::from_be_bytes([ihdr[4], ihdr[5], ihdr[6], ihdr[7]]),
            u32::from_be_bytes([ihdr[8], ihdr[9], ihdr[10], ihdr[11]]),
        ),
        _ => reader()
            .into_dimensions()
            .map_err(|e| decode(e.to_string()))?,
    };
    let dims = |reason: &str| ImageError::Dimensions {
        path: path.to_path_buf(),
        width,
        height,
        reason: reason.to_string(),
    };
    if width == 0 || height == 0 {
        return Err(dims("an empty image"));
    }
    if width > MAX_SIDE || height > MAX_SIDE {
        return Err(dims(&format!("more than {MAX_SIDE} pixels a side")));
    }
    let mut r = reader();
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    r.limits(limits);
    let img = r.decode().map_err(|e| decode(e.to_string()))?;
    let (width, height) = (img.width() as usize, img.height() as usize);
    let data = if img.color().has_alpha() {
        // transformers' `convert_to_rgb`: composited onto white (PIL's `alpha_composite`).
        img.to_rgba8()
            .into_raw()
            .chunks_exact(4)
            .flat_map(|p| {
                let a = u32::from(p[3]);
                [0, 1, 2].map(|c| over_white(u32::from(p[c]), a))
            })
            .collect()
    } else {
        img.to_rgb8().into_raw()
    };
    Ok(Rgb8 {
        width,
        height,
        data,
    })
}

/// One channel of PIL's `alpha_composite(white, pixel)`: its integer arithmetic with 7 extra
/// bits and divisions by 255 rounded as `((x >> 8) + x) >> 8`.
fn over_white(value: u32, alpha: u32) -> u8 {
    if alpha == 0 {
        return 255;
    }
    const BITS: u32 = 7;
    let blend = 255 * (255 - alpha);
    let out_a = alpha * 255 + blend;
    let coef1 = alpha * 255 * 255 * (1 << BITS) / out_a;
    let coef2 = 255 * (1 << BITS) - coef1;
    let t = value * coef1 + 255 * coef2 + (0x80 << BITS);
    ((((t >> 8) + t) >> 8) >> BITS) as u8
}

/// Fixed-point bits of PIL's 8-bit resampling weights.
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// PIL's bicubic kernel, `a = -0.5`.
fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// The taps of one pass from `in_size` to `out_size` samples: for each output sample the
/// first input sample and its fixed-point weights.
fn taps(in_size: usize, out_size: usize) -> Vec<(usize, Vec<i32>)> {
    let scale = in_size as f64 / out_size as f64;
    let filter_scale = scale.max(1.0);
    let inv_filter_scale = 1.0 / filter_scale;
    let support = 2.0 * filter_scale;
    (0..out_size)
        .map(|xx| {
            let center = (xx as f64 + 0.5) * scale;
            // PIL rounds with a C cast (toward zero), then clamps.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let n = xmax.saturating_sub(xmin);
            let mut w: Vec<f64> = (0..n)
                .map(|x| bicubic((x as f64 + xmin as f64 - center + 0.5) * inv_filter_scale))
                .collect();
            let total: f64 = w.iter().sum();
            if total != 0.0 {
                for v in &mut w {
                    *v /= total;
                }
            }
            let one = f64::from(1u32 << PRECISION_BITS);
            let fixed = w
                .iter()
                .map(|&v| {
                    if v < 0.0 {
                        (-0.5 + v * one) as i32
                    } else {
                        (0.5 + v * one) as i32
                    }
                })
                .collect();
            (xmin, fixed)
        })
        .collect()
}

/// One weighted sum rounded to 8 bits as PIL does.
fn clip8(acc: i64) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Resizes with PIL's bicubic filter (see the module docs).
///
/// Pillow (≥ 11) runs the vertical pass first when the height shrinks by more than twice as
/// many pixels as the width: `in_h - out_h > 0 && in_h - out_h > 2 (in_w - out_w)`. The order
/// changes the 8-bit rounding between the passes, so it is followed here.
pub fn resize_bicubic(img: &Rgb8, width: usize, height: usize) -> Rgb8 {
    let dh = img.height as i64 - height as i64;
    let dw = img.width as i64 - width as i64;
    if dh > 0 && dh > 2 * dw {
        let img = resize_vertical(img, height);
        resize_horizontal(&img, width)
    } else {
        let img = resize_horizontal(img, width);
        resize_vertical(&img, height)
    }
}

/// The horizontal pass alone (a copy when the width stays).
fn resize_horizontal(img: &Rgb8, width: usize) -> Rgb8 {
    let mut cur = img.clone();
    let half = 1i64 << (PRECISION_BITS - 1);
    if width != cur.width {
        let taps = taps(cur.width, width);
        let mut out = vec![0u8; cur.height * width * 3];
        for y in 0..cur.height {
            let row = &cur.data[y * cur.width * 3..(y + 1) * cur.width * 3];
            for (xx, (xmin, k)) in taps.iter().enumerate() {
                for c in 0..3 {
                    let mut acc = half;
                    for (i, &w) in k.iter().enumerate() {
                        acc += i64::from(row[(xmin + i) * 3 + c]) * i64::from(w);
                    }
                    out[(y * width + xx) * 3 + c] = clip8(acc);
                }
            }
        }
        cur = Rgb8 {
            width,
            height: cur.height,
            data: out,
        };
    }
    cur
}

/// The vertical pass alone (a copy when the height stays).
fn resize_vertical(img: &Rgb8, height: usize) -> Rgb8 {
    let mut cur = img.clone();
    let half = 1i64 << (PRECISION_BITS - 1);
    if height != cur.height {
        let taps = taps(cur.height, height);
        let w = cur.width;
        let mut out = vec![0u8; height * w * 3];
        for (yy, (ymin, k)) in taps.iter().enumerate() {
            for x in 0..w * 3 {
                let mut acc = half;
                for (i, &wt) in k.iter().enumerate() {
                    acc += i64::from(cur.data[(ymin + i) * w * 3 + x]) * i64::from(wt);
                }
                out[yy * w * 3 + x] = clip8(acc);
            }
        }
        cur = Rgb8 {
            width: w,
            height,
            data: out,
        };
    }
    cur
}

/// Pixel values `[3, height, width]` (channel-major, as transformers' `pixel_values[0]`).
pub fn pixel_values(img: &Rgb8, config: &PreprocessorConfig) -> Vec<f32> {
    let img = resize_bicubic(img, config.size.width, config.size.height);
    let (h, w) = (img.height, img.width);
    let mut out = vec![0f32; 3 * h * w];
    for c in 0..3 {
        for i in 0..h * w {
            let mut v = f64::from(img.data[i * 3 + c]);
            if config.do_rescale {
                v *= config.rescale_factor;
            }
            if config.do_normalize {
                v = (v - config.image_mean[c]) / config.image_std[c];
            }
            out[c * h * w + i] = v as f32;
        }
    }
    out
}

/// Reads an image file and makes its pixel values (see [`pixel_values`]).
pub fn load_pixel_values(path: &Path, config: &PreprocessorConfig) -> Result<Vec<f32>, ImageError> {
    Ok(pixel_values(&read_rgb(path)?, config))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The weights of every output sample sum to one (in fixed point, within rounding), and an
    /// upscale by 2 of a constant row stays constant.
    #[test]
    fn taps_are_normalised() {
        for (i, o) in [(45, 32), (20, 32), (61, 7), (5, 5)] {
            for (_, k) in taps(i, o) {
                let sum: i64 = k.iter().map(|&w| i64::from(w)).sum();
                assert!(
                    (sum - (1 << PRECISION_BITS)).abs() <= k.len() as i64,
                    "{i}->{o}"
                );
            }
        }
        let img = Rgb8 {
            width: 3,
            height: 2,
            data: vec![77; 18],
        };
        let out = resize_bicubic(&img, 6, 5);
        assert_eq!((out.width, out.height), (6, 5));
        assert!(out.data.iter().all(|&v| v == 77));
    }
}
