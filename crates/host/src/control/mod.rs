//! The control interface: the socket the host listens on, its protocol, the
//! `slotpool ctl` client, and sd_notify.
//!
//! - [`protocol`]: the line-delimited JSON frames ([`protocol::Request`],
//!   [`protocol::Response`], [`protocol::StatusReport`], [`protocol::StateEvent`]).
//! - [`server`]: [`server::ControlServer`], a non-blocking Unix-socket server that
//!   the supervisor's poll loop drives; it checks the peer's uid, bounds every
//!   buffer and timeout so that no client can block or crash the host, and hands
//!   each request to a [`ControlHandler`].
//! - [`client`]: `slotpool ctl` ([`client::CtlArgs`], [`client::run_ctl`]) with
//!   its documented exit codes.
//! - [`notify`]: sd_notify (`READY=1`, `WATCHDOG=1`, `STOPPING=1`, …).

#![forbid(unsafe_code)]

pub mod client;
pub mod notify;
pub mod protocol;
pub mod server;

/// What the host does with a control request. The supervisor implements it; the
/// server calls it from [`server::ControlServer::service`] on the supervisor's
/// own thread, one request at a time.
///
/// Contract:
/// - answer every request with one [`protocol::Response`] and return promptly
///   (the poll loop is waiting): `start`/`stop` answer once the action is
///   *initiated* and describe it (`stopping`), they do not wait for the child;
/// - [`protocol::Request::Tail`] is answered with [`protocol::Response::Log`]
///   (the path of the log file; the server reads and follows it) or an error;
/// - [`protocol::Request::Events`] never reaches the handler: the server keeps
///   the subscribers, and the supervisor calls
///   [`server::ControlServer::publish`] on each state change;
/// - for [`protocol::Request::Shutdown`] (and `Reload`), answer, then act after
///   `service` returns; the server writes the answer before returning whenever
///   the client's socket buffer has room.
pub trait ControlHandler {
    /// Carry out (or start) `req` and say what happened.
    fn handle(&mut self, req: protocol::Request) -> protocol::Response;
}
