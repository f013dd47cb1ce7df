//! The parts of `parley chat` that are not the conversation itself (that is
//! `commands::chat`): reading what the person types ([`input`], with a [`line_editor`]
//! on a [`terminal`]) and what a typed line means ([`typed`]).

pub mod input;
pub mod line_editor;
pub mod terminal;
pub mod typed;
