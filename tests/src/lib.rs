//! Black-box end-to-end tests of taskctx live in `tests/`; this library is empty.
