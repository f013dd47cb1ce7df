//! The line being typed in `chat` on a terminal: keys in, the line and what the screen
//! shows out. Pure (no terminal here: [`super::terminal`] feeds it keys and draws its
//! [`PromptLine`]), so it is tested without one.
//!
//! The line is one screen row: when it is wider than the terminal it scrolls
//! horizontally around the cursor, so a pasted 5 000-character line is kept whole (the
//! terminal's own line discipline would cut it at 4 095 bytes) and redrawing it after an
//! incoming message is one row to clear and write. It is bounded by [`MAX_LINE_BYTES`].
//!
//! The editing itself (text, cursor, kills, the bound) is [`crate::line_edit`]'s; this
//! module owns what is `chat`'s: its keys' outcomes and the scrolled prompt row.

use crate::line_edit::{Edit, Inserted, LineEdit};

/// Longest line kept, in bytes: well above the longest message
/// (`parley_protocol::e2e::content::MAX_TEXT_BYTES`), so that a line over the message
/// limit is still whole when it is refused with its length; what is typed beyond this
/// is dropped (and the refusal says the line is over the limit).
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// A key, as far as the line editor cares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Key {
    /// A character to insert at the cursor.
    Char(char),
    /// Enter: submit the line.
    Enter,
    /// An edit of the line (Ctrl-A and Ctrl-E: home and end, Ctrl-U, Ctrl-K and Ctrl-W:
    /// the kills).
    Edit(Edit),
    /// Ctrl-C: leave the chat.
    Interrupt,
    /// Ctrl-D: leave the chat when the line is empty, else delete under the cursor.
    EndOfInput,
}

/// What a key did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The line or cursor changed: redraw.
    Edited,
    /// Nothing changed.
    Unchanged,
    /// Enter: this line was submitted (and the editor is empty again).
    Submitted(String),
    /// The person leaves (Ctrl-C, or Ctrl-D on an empty line).
    Leave,
}

/// What the prompt row shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PromptLine {
    /// The row's text: the prompt and the visible part of the line.
    pub text: String,
    /// The cursor's column in it (0-based).
    pub cursor: usize,
}

/// The line being typed.
#[derive(Clone, Debug)]
pub struct LineEditor {
    line: LineEdit,
}

impl Default for LineEditor {
    fn default() -> LineEditor {
        LineEditor {
            line: LineEdit::new(MAX_LINE_BYTES),
        }
    }
}

impl LineEditor {
    /// The line as typed so far.
    pub fn line(&self) -> &str {
        self.line.text()
    }

    /// Applies one key.
    pub fn key(&mut self, key: Key) -> Outcome {
        match key {
            Key::Char(c) if c.is_control() => Outcome::Unchanged,
            // A character past the bound is dropped: the refusal of the line says it is
            // over the limit.
            Key::Char(c) => match self.line.insert(c) {
                Inserted::Taken => Outcome::Edited,
                Inserted::Full => Outcome::Unchanged,
            },
            Key::Enter => Outcome::Submitted(self.line.take()),
            Key::Edit(edit) => self.edit(edit),
            Key::Interrupt => Outcome::Leave,
            Key::EndOfInput if self.line.chars() == 0 => Outcome::Leave,
            Key::EndOfInput => self.edit(Edit::Delete),
        }
    }

    fn edit(&mut self, edit: Edit) -> Outcome {
        if self.line.edit(edit) {
            Outcome::Edited
        } else {
            Outcome::Unchanged
        }
    }

    /// The prompt row for a terminal `width` columns wide: `prompt`, then the part of
    /// the line around the cursor that fits (`…` at a side that is cut), the cursor
    /// always on the row. One character is one column (wide characters may overflow).
    pub fn view(&self, prompt: &str, width: usize) -> PromptLine {
        let prompt_width = prompt.chars().count();
        // Room for the line, keeping the last column free for the cursor at the end.
        let room = width.saturating_sub(prompt_width + 1).max(1);
        let len = self.line.chars();
        let cursor = self.line.cursor();
        if len <= room {
            return PromptLine {
                text: format!("{prompt}{}", self.line()),
                cursor: prompt_width + cursor,
            };
        }
        // A window of `room` characters around the cursor; a side that is cut shows
        // `…` in place of its outermost character.
        let start = cursor.saturating_sub(room / 2).min(len - room);
        let end = start + room;
        let mut text = String::from(prompt);
        let window = self.line().chars().skip(start).take(room);
        for (i, c) in window.enumerate() {
            let cut = (i == 0 && start > 0) || (i + 1 == room && end < len);
            text.push(if cut { '…' } else { c });
        }
        PromptLine {
            text,
            cursor: prompt_width + cursor - start,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

    use super::*;

    fn typed(text: &str) -> LineEditor {
        let mut editor = LineEditor::default();
        for c in text.chars() {
            assert_eq!(editor.key(Key::Char(c)), Outcome::Edited);
        }
        editor
    }

    #[test]
    fn typing_editing_and_enter() {
        let mut editor = typed("helo wrld");
        editor.key(Key::Edit(Edit::Home));
        for _ in 0..3 {
            editor.key(Key::Edit(Edit::Right));
        }
        editor.key(Key::Char('l'));
        editor.key(Key::Edit(Edit::End));
        for _ in 0..3 {
            editor.key(Key::Edit(Edit::Left));
        }
        editor.key(Key::Char('o'));
        assert_eq!(editor.line(), "hello world");
        editor.key(Key::Edit(Edit::End));
        editor.key(Key::Edit(Edit::Backspace));
        assert_eq!(editor.line(), "hello worl");
        assert_eq!(editor.key(Key::Edit(Edit::KillWord)), Outcome::Edited);
        assert_eq!(editor.line(), "hello ");
        assert_eq!(
            editor.key(Key::Enter),
            Outcome::Submitted("hello ".to_owned())
        );
        assert_eq!(editor.line(), "");
        assert_eq!(editor.view("> ", 80).text, "> ");
    }

    #[test]
    fn kills_and_deletes_and_leaving() {
        let mut editor = typed("abc def");
        for _ in 0..3 {
            editor.key(Key::Edit(Edit::Left));
        }
        editor.key(Key::Edit(Edit::KillToEnd));
        assert_eq!(editor.line(), "abc ");
        editor.key(Key::Edit(Edit::Left));
        editor.key(Key::Edit(Edit::KillToStart));
        assert_eq!(editor.line(), " ");
        assert_eq!(editor.key(Key::Edit(Edit::Backspace)), Outcome::Unchanged);
        assert_eq!(editor.key(Key::EndOfInput), Outcome::Edited);
        assert_eq!(editor.line(), "");
        assert_eq!(editor.key(Key::EndOfInput), Outcome::Leave);
        assert_eq!(typed("x").key(Key::Interrupt), Outcome::Leave);
        assert_eq!(editor.key(Key::Char('\u{7}')), Outcome::Unchanged);
    }

    #[test]
    fn a_long_pasted_line_is_kept_whole_and_scrolls_around_the_cursor() {
        let long: String = (0..5000)
            .map(|i| char::from(b'a' + (i % 26) as u8))
            .collect();
        let mut editor = typed(&long);
        assert_eq!(editor.line(), long);

        let view = editor.view("> ", 40);
        assert_eq!(view.text.chars().count(), 39, "{view:?}");
        assert!(view.text.starts_with("> …"), "{view:?}");
        assert!(view.text.ends_with(&long[long.len() - 36..]), "{view:?}");
        assert_eq!(view.cursor, 39);

        editor.key(Key::Edit(Edit::Home));
        let view = editor.view("> ", 40);
        assert!(
            view.text.starts_with(&format!("> {}", &long[..30])),
            "{view:?}"
        );
        assert!(view.text.ends_with('…'), "{view:?}");
        assert_eq!(view.cursor, 2);

        for _ in 0..2500 {
            editor.key(Key::Edit(Edit::Right));
        }
        let view = editor.view("> ", 40);
        assert!(
            view.text.starts_with("> …") && view.text.ends_with('…'),
            "{view:?}"
        );
        let under_cursor = view.text.chars().nth(view.cursor).unwrap();
        assert_eq!(under_cursor, long.chars().nth(2500).unwrap(), "{view:?}");
    }

    #[test]
    fn the_line_is_bounded() {
        let mut editor = LineEditor::default();
        for _ in 0..MAX_LINE_BYTES / 2 {
            editor.key(Key::Char('é'));
        }
        assert_eq!(editor.key(Key::Char('x')), Outcome::Unchanged);
        assert_eq!(editor.line().len(), MAX_LINE_BYTES);
    }

    #[test]
    fn a_short_line_shows_whole_with_the_cursor_where_it_is() {
        let mut editor = typed("héllo");
        editor.key(Key::Edit(Edit::Left));
        assert_eq!(
            editor.view("to bob> ", 80),
            PromptLine {
                text: "to bob> héllo".to_owned(),
                cursor: 12
            }
        );
    }
}
