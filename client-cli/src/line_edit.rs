//! One line of text being typed and its cursor: the editing both line editors of this
//! client share (`chat`'s prompt in [`crate::chat::line_editor`], `tui`'s input line),
//! and the keys that mean the same edit in both ([`edit_key`]).
//!
//! The line is bounded in bytes by a limit its owner chooses; an insertion that would
//! pass it is refused and reported [`Inserted::Full`], so the owner can say so. What the
//! line looks like on the screen, and what the other keys do, belongs to each owner.

use crossterm::event::KeyCode;

/// An edit of the line (not an insertion).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Edit {
    /// Delete the character before the cursor.
    Backspace,
    /// Delete the character under the cursor.
    Delete,
    /// Cursor one character left.
    Left,
    /// Cursor one character right.
    Right,
    /// Cursor to the start.
    Home,
    /// Cursor to the end.
    End,
    /// Delete from the start to the cursor.
    KillToStart,
    /// Delete from the cursor to the end.
    KillToEnd,
    /// Delete the word before the cursor (and the blanks between it and the cursor).
    KillWord,
}

/// Whether an insertion was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inserted {
    /// All of it is in the line.
    Taken,
    /// The line is at its limit: refused (for a string: what fitted was taken).
    Full,
}

/// The edit a key without Ctrl means in every line editor of this client: Backspace,
/// Delete, the arrows left and right, Home and End (`None` for any other key).
pub fn edit_key(code: KeyCode) -> Option<Edit> {
    Some(match code {
        KeyCode::Backspace => Edit::Backspace,
        KeyCode::Delete => Edit::Delete,
        KeyCode::Left => Edit::Left,
        KeyCode::Right => Edit::Right,
        KeyCode::Home => Edit::Home,
        KeyCode::End => Edit::End,
        _ => return None,
    })
}

/// A line of text and a cursor in it, never longer than its limit in bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LineEdit {
    text: String,
    /// Characters in `text`.
    chars: usize,
    /// Cursor position in characters (0..=chars).
    cursor: usize,
    /// The most bytes `text` may hold.
    max_bytes: usize,
}

impl LineEdit {
    /// An empty line that will hold at most `max_bytes` bytes.
    pub fn new(max_bytes: usize) -> LineEdit {
        LineEdit {
            text: String::new(),
            chars: 0,
            cursor: 0,
            max_bytes,
        }
    }

    /// The text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The length of the text, in characters.
    pub fn chars(&self) -> usize {
        self.chars
    }

    /// The cursor, in characters from the start.
    pub fn cursor(&self) -> usize {
        self.cursor
    }

    /// Inserts `c` at the cursor, unless the line would pass its limit.
    pub fn insert(&mut self, c: char) -> Inserted {
        if self.text.len() + c.len_utf8() > self.max_bytes {
            return Inserted::Full;
        }
        let at = self.byte_index(self.cursor);
        self.text.insert(at, c);
        self.chars += 1;
        self.cursor += 1;
        Inserted::Taken
    }

    /// Inserts `text` at the cursor, line breaks as spaces (the line is one line), as
    /// far as the limit allows.
    pub fn insert_str(&mut self, text: &str) -> Inserted {
        let room = self.max_bytes.saturating_sub(self.text.len());
        let mut taken = String::new();
        let mut inserted = Inserted::Taken;
        for c in text.chars() {
            if taken.len() + c.len_utf8() > room {
                inserted = Inserted::Full;
                break;
            }
            taken.push(if c == '\n' || c == '\r' { ' ' } else { c });
        }
        let at = self.byte_index(self.cursor);
        let count = taken.chars().count();
        self.text.insert_str(at, &taken);
        self.chars += count;
        self.cursor += count;
        inserted
    }

    /// Applies `edit`; whether the text or the cursor changed.
    pub fn edit(&mut self, edit: Edit) -> bool {
        let (cursor, chars) = (self.cursor, self.chars);
        match edit {
            Edit::Backspace if cursor > 0 => self.remove(cursor - 1, cursor),
            Edit::Delete if cursor < chars => self.remove(cursor, cursor + 1),
            Edit::Left if cursor > 0 => self.cursor -= 1,
            Edit::Right if cursor < chars => self.cursor += 1,
            Edit::Home if cursor > 0 => self.cursor = 0,
            Edit::End if cursor < chars => self.cursor = chars,
            Edit::KillToStart if cursor > 0 => self.remove(0, cursor),
            Edit::KillToEnd if cursor < chars => self.remove(cursor, chars),
            Edit::KillWord if cursor > 0 => {
                let mut before = self.text[..self.byte_index(cursor)]
                    .chars()
                    .rev()
                    .peekable();
                let mut start = cursor;
                while before.next_if(|c| c.is_whitespace()).is_some() {
                    start -= 1;
                }
                while before.next_if(|c| !c.is_whitespace()).is_some() {
                    start -= 1;
                }
                self.remove(start, cursor);
            }
            _ => return false,
        }
        true
    }

    /// Takes the line out, leaving it empty.
    pub fn take(&mut self) -> String {
        self.cursor = 0;
        self.chars = 0;
        std::mem::take(&mut self.text)
    }

    /// Removes the characters `start..end` and puts the cursor at `start`.
    fn remove(&mut self, start: usize, end: usize) {
        let range = self.byte_index(start)..self.byte_index(end);
        self.text.replace_range(range, "");
        self.chars -= end - start;
        self.cursor = start;
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

    fn typed(text: &str, max_bytes: usize) -> LineEdit {
        let mut line = LineEdit::new(max_bytes);
        for c in text.chars() {
            assert_eq!(line.insert(c), Inserted::Taken);
        }
        line
    }

    #[test]
    fn edits_at_the_cursor_in_characters_not_bytes() {
        let mut line = typed("héllo", 64);
        line.edit(Edit::Left);
        line.edit(Edit::Left);
        line.edit(Edit::Backspace);
        line.insert('L');
        assert_eq!(line.text(), "héLlo");
        line.edit(Edit::Home);
        line.edit(Edit::Delete);
        line.edit(Edit::End);
        line.insert('!');
        assert_eq!(line.text(), "éLlo!");
        line.edit(Edit::Left);
        line.edit(Edit::KillToStart);
        assert_eq!((line.text(), line.cursor()), ("!", 0));
        assert_eq!(line.take(), "!");
        assert_eq!(line.text(), "");
    }

    #[test]
    fn an_edit_says_whether_anything_changed() {
        let mut line = typed("ab", 64);
        for edit in [Edit::Right, Edit::End, Edit::Delete, Edit::KillToEnd] {
            assert!(!line.edit(edit), "{edit:?} at the end");
        }
        assert!(line.edit(Edit::Home));
        for edit in [
            Edit::Left,
            Edit::Home,
            Edit::Backspace,
            Edit::KillToStart,
            Edit::KillWord,
        ] {
            assert!(!line.edit(edit), "{edit:?} at the start");
        }
        assert_eq!((line.text(), line.cursor()), ("ab", 0));
    }

    #[test]
    fn kills_words_and_the_ends() {
        let mut line = typed("one  twö  ", 64);
        assert!(line.edit(Edit::KillWord));
        assert_eq!((line.text(), line.cursor()), ("one  ", 5));
        line.edit(Edit::Left);
        line.edit(Edit::Left);
        assert!(line.edit(Edit::KillToEnd));
        assert_eq!((line.text(), line.cursor(), line.chars()), ("one", 3, 3));
        line.edit(Edit::Left);
        assert!(line.edit(Edit::KillWord));
        assert_eq!((line.text(), line.cursor()), ("e", 0));
    }

    #[test]
    fn refuses_input_past_its_limit() {
        let limit = 64;
        let mut line = LineEdit::new(limit);
        assert_eq!(line.insert_str(&"x".repeat(limit - 1)), Inserted::Taken);
        assert_eq!(line.insert('é'), Inserted::Full);
        assert_eq!(line.insert('y'), Inserted::Taken);
        assert_eq!(line.insert('z'), Inserted::Full);
        assert_eq!(line.text().len(), limit);
        line.edit(Edit::Home);
        line.edit(Edit::Delete);
        assert_eq!(line.insert_str("é"), Inserted::Full);
        assert_eq!(line.insert_str("a\nb"), Inserted::Full);
        assert_eq!(line.text().len(), limit);
        assert!(line.text().starts_with('a'));
    }

    #[test]
    fn a_paste_goes_in_at_the_cursor_as_one_line() {
        let mut line = typed("ad", 64);
        line.edit(Edit::Left);
        assert_eq!(line.insert_str("b\nc"), Inserted::Taken);
        assert_eq!((line.text(), line.cursor()), ("ab cd", 4));
    }

    #[test]
    fn the_editing_keys() {
        assert_eq!(edit_key(KeyCode::Backspace), Some(Edit::Backspace));
        assert_eq!(edit_key(KeyCode::Delete), Some(Edit::Delete));
        assert_eq!(edit_key(KeyCode::Left), Some(Edit::Left));
        assert_eq!(edit_key(KeyCode::Right), Some(Edit::Right));
        assert_eq!(edit_key(KeyCode::Home), Some(Edit::Home));
        assert_eq!(edit_key(KeyCode::End), Some(Edit::End));
        assert_eq!(edit_key(KeyCode::Up), None);
        assert_eq!(edit_key(KeyCode::Char('u')), None);
    }
}
