#![doc = include_str!("../README.md")]

pub mod builder;
pub mod config;
pub mod context;
pub mod tokens;
