//! `slotpool devices`: every cpal host this build knows, its output and input devices,
//! and each device's default configuration.

use std::fmt::Write as _;

use cpal::traits::{DeviceTrait, HostTrait};

use super::device::device_label;

/// The listing as text, one host after the other. Problems (a host that is not
/// available, a device whose config cannot be read) are shown in place, never fatal.
pub fn listing() -> String {
    // alsa-lib would print its probing diagnostics to stderr; keep them out of the listing.
    let _alsa_log = super::device::AlsaLog::capture();
    let mut out = String::new();
    let available = cpal::available_hosts();
    let default_host = cpal::default_host().id();
    for id in cpal::ALL_HOSTS {
        let marks = match (available.contains(id), *id == default_host) {
            (true, true) => " (default host)",
            (true, false) => "",
            (false, _) => " (not available)",
        };
        let _ = writeln!(out, "{}{marks}", id.name());
        if !available.contains(id) {
            continue;
        }
        let host = match cpal::host_from_id(*id) {
            Ok(h) => h,
            Err(e) => {
                let _ = writeln!(out, "  cannot open the host: {e}");
                continue;
            }
        };
        if *id == cpal::HostId::Alsa {
            // (ALSA is always listed; nothing special.)
        } else if host
            .output_devices()
            .map(|mut d| d.next().is_none())
            .unwrap_or(true)
            && host
                .input_devices()
                .map(|mut d| d.next().is_none())
                .unwrap_or(true)
        {
            let server = std::env::var("JACK_DEFAULT_SERVER").unwrap_or_else(|_| "default".into());
            let _ = writeln!(
                out,
                "  no devices: no server reachable (server name `{server}`)"
            );
            continue;
        }
        let default_out = host.default_output_device().map(|d| device_label(&d));
        let default_in = host.default_input_device().map(|d| device_label(&d));
        list_direction(
            &mut out,
            "output",
            host.output_devices().map(|d| d.collect::<Vec<_>>()),
            default_out.as_deref(),
            |d| d.default_output_config(),
        );
        list_direction(
            &mut out,
            "input",
            host.input_devices().map(|d| d.collect::<Vec<_>>()),
            default_in.as_deref(),
            |d| d.default_input_config(),
        );
    }
    if !cfg!(feature = "jack") {
        let _ = writeln!(
            out,
            "(JACK: this slotpool was built without the `jack` feature)"
        );
    }
    out
}

fn list_direction(
    out: &mut String,
    what: &str,
    devices: Result<Vec<cpal::Device>, cpal::Error>,
    default: Option<&str>,
    config: impl Fn(&cpal::Device) -> Result<cpal::SupportedStreamConfig, cpal::Error>,
) {
    let devices = match devices {
        Ok(d) => d,
        Err(e) => {
            let _ = writeln!(out, "  {what} devices: cannot list: {e}");
            return;
        }
    };
    if devices.is_empty() {
        let _ = writeln!(out, "  {what} devices: none");
        return;
    }
    let _ = writeln!(out, "  {what} devices:");
    for d in &devices {
        let label = device_label(d);
        let mark = if Some(label.as_str()) == default {
            " (default)"
        } else {
            ""
        };
        let id = d.id().map(|id| id.id().to_string()).unwrap_or_default();
        let id = if id.is_empty() || id == label {
            String::new()
        } else {
            format!(" [id {id}]")
        };
        let cfg = match config(d) {
            Ok(c) => format!(
                "{} Hz, {} ch, {}, buffer {}",
                c.sample_rate(),
                c.channels(),
                c.sample_format(),
                match c.buffer_size() {
                    cpal::SupportedBufferSize::Range { min, max } => format!("{min}..{max} frames"),
                    cpal::SupportedBufferSize::Unknown => "size unknown".into(),
                }
            ),
            Err(e) => format!("no default config: {e}"),
        };
        let _ = writeln!(out, "    {label}{mark}{id}: {cfg}");
    }
}
