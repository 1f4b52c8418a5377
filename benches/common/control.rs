//! The start/stop handshake between a bench and its ring peer (a thread or a process).
//!
//! The peer sleeps on the doorbell while idle, so an idle peer costs the variant being
//! measured nothing. The host starts a run with `Ping { token: RUN }` on the command ring
//! and a ring of the doorbell; the peer answers with `signal_done` and works until it
//! pops `Ping { token: STOP }`, then answers again. `Shutdown` ends the peer.
//!
//! A peer that finds something wrong stores a fault code (`WorkerBell::set_fault`); the
//! host checks it at every handshake, and while it waits for progress.

use std::time::Duration;

use slotpool_ring::{Command, HostEnd, Monitor, MonoTime, PushError, WorkerEnd};

use super::{PEER_TIMEOUT, spin_until};

/// Token of the ping that starts a run (low 32 bits; the high 32 carry the run's
/// argument, see [`run_token`]).
pub const RUN: u64 = 0x5255_4e00;

/// The token of a `RUN` ping carrying `arg` (below 2^32) to the peer's run.
pub fn run_token(arg: u32) -> u64 {
    RUN | (u64::from(arg) << 32)
}
/// Token of the ping that ends a run.
pub const STOP: u64 = 0x5354_4f50;
/// Fault code: a block or record arrived damaged or out of order.
pub const FAULT_BAD_DATA: u32 = 0xbad0_da7a;
/// Fault code: the peer's ring handle reported an error.
pub const FAULT_RING: u32 = 0xbad0_0f17;

/// Panics if the peer has reported a fault.
pub fn check_peer(monitor: &Monitor, what: &str) {
    let code = monitor.fault_code();
    assert!(
        code == 0,
        "{what}: the peer reported fault {code:#x} (see its stderr)"
    );
}

/// Pushes `command`, spinning while the command ring is full.
pub fn send(host: &mut HostEnd, command: Command, what: &str) {
    spin_until(what, || match host.commands.push(command) {
        Ok(_) => true,
        Err(PushError::Full) => false,
        Err(e) => panic!("{what}: command ring: {e}"),
    });
}

/// Host side: sends `Ping { token }`, rings and waits for the peer's answer.
pub fn handshake(host: &mut HostEnd, monitor: &Monitor, token: u64, what: &str) {
    let seen = host.bell.done_count();
    send(host, Command::Ping { token }, what);
    host.bell.ring(0);
    let deadline = MonoTime::now() + PEER_TIMEOUT;
    while host.bell.done_count() == seen {
        check_peer(monitor, what);
        assert!(
            MonoTime::now() < deadline,
            "{what}: the peer did not answer within {PEER_TIMEOUT:?}"
        );
        let _ = host
            .bell
            .wait_done(seen, MonoTime::now() + Duration::from_millis(50));
    }
}

/// Host side: asks the peer to exit.
pub fn shutdown(host: &mut HostEnd, what: &str) {
    send(host, Command::Shutdown, what);
    host.bell.ring(0);
}

/// Peer side: sleeps on the doorbell until a command arrives; on `RUN` answers, calls
/// `run` with the ping's argument (which returns once it has popped the `STOP` ping) and
/// answers again; returns on `Shutdown`. On an error the fault code is stored for the
/// host to see.
pub fn serve(
    end: &mut WorkerEnd,
    mut run: impl FnMut(&mut WorkerEnd, u32) -> Result<(), String>,
) -> Result<(), String> {
    let result = (|| loop {
        // Read the doorbell before looking at the commands: a command pushed after this
        // load comes with a ring that makes the wait below return at once.
        let seen = end.bell.doorbell();
        match end
            .commands
            .pop()
            .map_err(|e| format!("command ring: {e}"))?
        {
            Some((_, Command::Shutdown)) => return Ok(()),
            Some((_, Command::Ping { token })) if token & 0xffff_ffff == RUN => {
                end.bell.signal_done();
                run(end, (token >> 32) as u32)?;
                end.bell.signal_done();
            }
            Some((_, other)) => return Err(format!("unexpected command while idle: {other:?}")),
            None => {
                let _ = end
                    .bell
                    .wait_doorbell(seen, MonoTime::now() + Duration::from_millis(200));
            }
        }
    })();
    if let Err(e) = &result {
        end.bell.set_fault(if e.starts_with("data:") {
            FAULT_BAD_DATA
        } else {
            FAULT_RING
        });
    }
    result
}

/// Peer side, inside a run: true once the `STOP` ping has been popped. Any other
/// command is a protocol error.
pub fn stop_requested(end: &mut WorkerEnd) -> Result<bool, String> {
    match end
        .commands
        .pop()
        .map_err(|e| format!("command ring: {e}"))?
    {
        None => Ok(false),
        Some((_, Command::Ping { token: STOP })) => Ok(true),
        Some((_, other)) => Err(format!("unexpected command during a run: {other:?}")),
    }
}
