//! herd: a proxy herd of named TCP servers. Clients tell any server where they are
//! (`IAMAT`) and ask what is near someone (`WHATSAT`); servers flood locations to each
//! other over persistent links.
//!
//! [`config`] reads herd.conf; [`protocol`] turns lines into commands and replies (pure);
//! [`store`] keeps each client's latest report; [`server`] accepts connections and
//! answers clients, reading them through [`lines`]; [`peer`] keeps the links to other
//! servers, authenticated by [`handshake`]; [`places`] answers "what is nearby"; [`log`]
//! writes every line in and out; [`up`] runs a whole herd as child processes.

#![forbid(unsafe_code)]
#![warn(missing_docs, rust_2018_idioms)]

pub mod config;
pub mod handshake;
pub mod lines;
pub mod log;
pub mod peer;
pub mod places;
pub mod protocol;
pub mod secure;
pub mod server;
pub mod state;
pub mod store;
pub mod up;
