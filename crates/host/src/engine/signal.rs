//! Sample-level work on blocks from untrusted workers: sanitizing, fallbacks and fades.
//!
//! Everything here is pure, allocation-free arithmetic on planar blocks
//! (`channels × frames`). The in-process reference renderer applies the same
//! [`sanitize`] to every block its modules produce, so a render through worker
//! processes and the reference compute the same bits.

use crate::config::Fallback;

/// The largest magnitude a worker's sample may have: +24 dBFS. Anything larger is
/// clamped; a broken worker can make a slot loud, never make the host emit garbage.
pub const MAX_SAMPLE: f32 = 16.0;

/// How many blocks a `hold` fallback repeats the last good block before it has faded
/// to silence (gain steps 1, 3/4, 1/2, 1/4, then 0).
pub const HOLD_BLOCKS: u32 = 4;

/// Makes a block from a worker safe to mix: NaN and ±∞ become 0, subnormals become 0
/// (they cost hundreds of cycles per operation downstream), magnitudes above
/// [`MAX_SAMPLE`] are clamped. Returns how many samples were changed.
pub fn sanitize(block: &mut [f32]) -> u32 {
    let mut changed = 0u32;
    for s in block {
        let x = *s;
        let y = if !x.is_finite() || x.is_subnormal() {
            0.0
        } else {
            x.clamp(-MAX_SAMPLE, MAX_SAMPLE)
        };
        // Bit comparison: -0.0 stays -0.0, a legitimate value is never "changed".
        if y.to_bits() != x.to_bits() {
            *s = y;
            changed += 1;
        }
    }
    changed
}

/// Writes the fallback block of a slot into `out` (planar `channels_out × frames`).
///
/// - `Silence`: zeros.
/// - `Bypass`: the slot's own input, output channel `c` reading input channel
///   `c mod channels_in` (the worker SDK's `channel_for_output` rule); zeros when the
///   slot has no input.
/// - `Hold`: the last good block, at gain `1 - held/HOLD_BLOCKS` (silence once
///   `held >= HOLD_BLOCKS`), `held` counting the fallback blocks already emitted.
pub fn fill_fallback(
    fallback: Fallback,
    input: &[f32],
    last_good: &[f32],
    held: u32,
    frames: usize,
    out: &mut [f32],
) {
    match fallback {
        Fallback::Silence => out.fill(0.0),
        Fallback::Bypass => {
            let inputs = input.len().checked_div(frames).unwrap_or(0);
            if inputs == 0 {
                out.fill(0.0);
                return;
            }
            for (c, dst) in out.chunks_exact_mut(frames).enumerate() {
                let k = c % inputs;
                dst.copy_from_slice(&input[k * frames..(k + 1) * frames]);
            }
        }
        Fallback::Hold => {
            if held >= HOLD_BLOCKS {
                out.fill(0.0);
                return;
            }
            let gain = 1.0 - held as f32 / HOLD_BLOCKS as f32;
            for (d, s) in out.iter_mut().zip(last_good) {
                *d = gain * s;
            }
        }
    }
}

/// Crossfades over one block, in place: `out = from × (1 − t) + out × t`, with `t`
/// rising linearly from `1/frames` to 1 across each channel. Used both ways: from
/// the last good block into the fallback (fade-out) and from the fallback into the
/// first good block of a recovered slot (fade-in).
pub fn crossfade_from(from: &[f32], out: &mut [f32], frames: usize) {
    if frames == 0 {
        return;
    }
    for (dst, src) in out.chunks_exact_mut(frames).zip(from.chunks_exact(frames)) {
        for (i, (y, &x)) in dst.iter_mut().zip(src).enumerate() {
            let t = (i + 1) as f32 / frames as f32;
            *y = x + (*y - x) * t;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitize_replaces_garbage_and_keeps_good_samples_bit_exact() {
        let mut b = [
            0.5,
            -0.0,
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            1e-40,
            100.0,
            -100.0,
            MAX_SAMPLE,
        ];
        let changed = sanitize(&mut b);
        assert_eq!(changed, 6);
        assert_eq!(b[0], 0.5);
        assert_eq!(b[1].to_bits(), (-0.0f32).to_bits());
        assert_eq!(&b[2..6], &[0.0; 4]);
        assert_eq!(b[6], MAX_SAMPLE);
        assert_eq!(b[7], -MAX_SAMPLE);
        assert_eq!(b[8], MAX_SAMPLE);
    }

    #[test]
    fn bypass_maps_channels_modulo_the_input_count() {
        let input = [1.0, 1.0, 2.0, 2.0];
        let mut out = [9.0; 6];
        fill_fallback(Fallback::Bypass, &input, &[], 0, 2, &mut out);
        assert_eq!(out, [1.0, 1.0, 2.0, 2.0, 1.0, 1.0]);
        fill_fallback(Fallback::Bypass, &[], &[], 0, 2, &mut out);
        assert_eq!(out, [0.0; 6]);
    }

    #[test]
    fn hold_repeats_the_last_block_and_fades_to_silence() {
        let last = [1.0, -1.0];
        let mut out = [0.0; 2];
        let gains: Vec<f32> = (0..=HOLD_BLOCKS + 1)
            .map(|held| {
                fill_fallback(Fallback::Hold, &[], &last, held, 2, &mut out);
                assert_eq!(out[0], -out[1]);
                out[0]
            })
            .collect();
        assert_eq!(gains, [1.0, 0.75, 0.5, 0.25, 0.0, 0.0]);
    }

    #[test]
    fn crossfade_ends_on_the_target_and_starts_near_the_source() {
        let from = [1.0; 8];
        let mut out = [0.0; 8];
        crossfade_from(&from, &mut out, 4);
        assert_eq!(out, [0.75, 0.5, 0.25, 0.0, 0.75, 0.5, 0.25, 0.0]);
    }
}
