//! The CDN of stage 5 (docs/journey.md section 7): object storage, the origin
//! (`d11-origin`), and an HTTP cache in two roles, the edge near the phone and the parent in
//! front of the origin (`d11-cdn`).
//!
//! - [`origin`]: the object store and its answers (ETag, Last-Modified, conditional GET,
//!   Range), sans-IO.
//! - [`cache`]: the cache's store and decisions, sans-IO, with `http-cache-semantics` for RFC
//!   9111's rules.
//! - [`picture`]: the product pictures the lab preloads (real PNG files).

pub mod cache;
pub mod origin;
pub mod picture;
pub mod server;
