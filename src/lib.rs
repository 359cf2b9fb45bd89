//! herd: a proxy herd of named TCP servers. Clients tell any server where they are
//! (`IAMAT`) and ask what is near someone (`WHATSAT`); servers flood locations to each
//! other over persistent links.
//!
//! Dependencies run one way: [`server`] → {[`replica`], [`peer`]}; [`peer`] → [`replica`];
//! [`replica`] → {[`store`], [`state`], [`log`]}; nothing points back up.
//!
//! [`config`] reads herd.conf; [`protocol`] turns client lines into commands and replies
//! (pure); [`server`] runs the client port and the bus port, reading lines through
//! [`lines`]; [`replica`] owns the update policy — the client [`store`], the durable
//! log in [`state`], offsets, the backlog and each link's catch-up; [`peer`] keeps the
//! links to other servers, with messages from [`wire`] and proofs from [`handshake`];
//! [`status`] asks a herd how it is; [`places`] answers "what is nearby"; [`log`] writes
//! every line in and out; [`shutdown`] holds the stop and timeout helpers; [`up`] runs a
//! whole herd as child processes. Clients and links share one read → log → decide →
//! persist → flood loop, in `batch`.

#![forbid(unsafe_code)]
#![warn(missing_docs, rust_2018_idioms)]

mod batch;
pub mod config;
pub mod handshake;
pub mod lines;
pub mod log;
pub mod peer;
pub mod places;
pub mod protocol;
mod replica;
pub mod secure;
pub mod server;
mod shutdown;
pub mod state;
pub mod status;
pub mod store;
pub mod up;
mod wire;
