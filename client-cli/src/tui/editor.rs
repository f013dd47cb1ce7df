//! The input line: text and a cursor, edited by keys, never longer than what one
//! message may carry (a paste past the limit stops there and says so, instead of a
//! silent cut later).

use parley_protocol::e2e::content::MAX_TEXT_BYTES;

/// The line being typed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Editor {
    text: String,
    /// Characters in `text`.
    chars: usize,
    /// Cursor position in characters (0..=chars).
    cursor: usize,
}

/// Whether a character was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Typed {
    /// It is in the line.
    Taken,
    /// The line is at [`MAX_TEXT_BYTES`]: refused.
    Full,
}

impl Editor {
    /// The text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The cursor, in characters from the start.
    pub fn cursor(&self) -> usize {
        self.cursor
    }

    /// Inserts `c` at the cursor, unless the line would pass the message limit.
    pub fn insert(&mut self, c: char) -> Typed {
        if self.text.len() + c.len_utf8() > MAX_TEXT_BYTES {
            return Typed::Full;
        }
        let at = self.byte_index(self.cursor);
        self.text.insert(at, c);
        self.chars += 1;
        self.cursor += 1;
        Typed::Taken
    }

    /// Inserts `text` at the cursor, line breaks as spaces (Enter alone sends), as far as
    /// the message limit allows.
    pub fn insert_str(&mut self, text: &str) -> Typed {
        let room = MAX_TEXT_BYTES.saturating_sub(self.text.len());
        let mut taken = String::new();
        let mut typed = Typed::Taken;
        for c in text.chars() {
            if taken.len() + c.len_utf8() > room {
                typed = Typed::Full;
                break;
            }
            taken.push(if c == '\n' || c == '\r' { ' ' } else { c });
        }
        let at = self.byte_index(self.cursor);
        let count = taken.chars().count();
        self.text.insert_str(at, &taken);
        self.chars += count;
        self.cursor += count;
        typed
    }

    /// Deletes the character before the cursor.
    pub fn backspace(&mut self) {
        if self.cursor > 0 {
            self.cursor -= 1;
            let at = self.byte_index(self.cursor);
            self.text.remove(at);
            self.chars -= 1;
        }
    }

    /// Deletes the character under the cursor.
    pub fn delete(&mut self) {
        if self.cursor < self.chars {
            let at = self.byte_index(self.cursor);
            self.text.remove(at);
            self.chars -= 1;
        }
    }

    /// Moves the cursor one character left.
    pub fn left(&mut self) {
        self.cursor = self.cursor.saturating_sub(1);
    }

    /// Moves the cursor one character right.
    pub fn right(&mut self) {
        self.cursor = (self.cursor + 1).min(self.chars);
    }

    /// Moves the cursor to the start.
    pub fn home(&mut self) {
        self.cursor = 0;
    }

    /// Moves the cursor to the end.
    pub fn end(&mut self) {
        self.cursor = self.chars;
    }

    /// Deletes from the start of the line to the cursor.
    pub fn kill_to_start(&mut self) {
        let at = self.byte_index(self.cursor);
        self.text.replace_range(..at, "");
        self.chars -= self.cursor;
        self.cursor = 0;
    }

    /// Takes the line out, leaving it empty.
    pub fn take(&mut self) -> String {
        self.cursor = 0;
        self.chars = 0;
        std::mem::take(&mut self.text)
    }

    fn byte_index(&self, chars: usize) -> usize {
        if chars >= self.chars {
            return self.text.len();
        }
        self.text
            .char_indices()
            .nth(chars)
            .map_or(self.text.len(), |(i, _)| i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn typed(text: &str) -> Editor {
        let mut editor = Editor::default();
        for c in text.chars() {
            assert_eq!(editor.insert(c), Typed::Taken);
        }
        editor
    }

    #[test]
    fn edits_at_the_cursor_in_characters_not_bytes() {
        let mut editor = typed("héllo");
        editor.left();
        editor.left();
        editor.backspace();
        editor.insert('L');
        assert_eq!(editor.text(), "héLlo");
        editor.home();
        editor.delete();
        editor.end();
        editor.insert('!');
        assert_eq!(editor.text(), "éLlo!");
        editor.left();
        editor.kill_to_start();
        assert_eq!((editor.text(), editor.cursor()), ("!", 0));
        assert_eq!(editor.take(), "!");
        assert_eq!(editor.text(), "");
    }

    #[test]
    fn refuses_input_past_the_message_limit() {
        let mut editor = Editor::default();
        assert_eq!(
            editor.insert_str(&"x".repeat(MAX_TEXT_BYTES - 1)),
            Typed::Taken
        );
        assert_eq!(editor.insert('é'), Typed::Full);
        assert_eq!(editor.insert('y'), Typed::Taken);
        assert_eq!(editor.insert('z'), Typed::Full);
        assert_eq!(editor.text().len(), MAX_TEXT_BYTES);
        editor.home();
        editor.delete();
        assert_eq!(editor.insert_str("é"), Typed::Full);
        assert_eq!(editor.insert_str("a\nb"), Typed::Full);
        assert_eq!(editor.text().len(), MAX_TEXT_BYTES);
        assert!(editor.text().starts_with('a'));
    }

    #[test]
    fn a_paste_goes_in_at_the_cursor_as_one_line() {
        let mut editor = typed("ad");
        editor.left();
        assert_eq!(editor.insert_str("b\nc"), Typed::Taken);
        assert_eq!((editor.text(), editor.cursor()), ("ab cd", 4));
    }
}
