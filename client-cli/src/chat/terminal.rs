//! `chat`'s input on a terminal: keys read one by one (crossterm's raw mode, so the
//! terminal's line discipline neither cuts a long line at 4 095 bytes nor echoes over
//! incoming messages), edited by [`LineEditor`], with the prompt row redrawn below every
//! message printed while a line is being typed.
//!
//! Raw mode also turns off output processing (`\n` no longer returns the carriage);
//! this module turns that one flag back on, so everything the rest of the client prints
//! with `println!` keeps starting at column 0. The terminal's mode is restored when the
//! [`Terminal`] is dropped, on every way out of `chat` (an error or a panic included).

use std::io::{self, Write};
use std::time::Duration;

use crossterm::cursor::MoveToColumn;
use crossterm::event::{Event, EventStream, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use crossterm::terminal::{self, Clear, ClearType};
use crossterm::{queue, QueueableCommand};
use futures_util::StreamExt;

use super::line_editor::{Key, LineEditor, Outcome};
use crate::line_edit::{edit_key, Edit};

/// The terminal in raw mode with a line being typed.
#[derive(Debug)]
pub struct Terminal {
    editor: LineEditor,
    prompt: String,
    width: usize,
    events: EventStream,
}

impl Terminal {
    /// Puts the terminal in raw mode (output processing kept) and draws the prompt.
    pub fn open(prompt: String) -> io::Result<Terminal> {
        terminal::enable_raw_mode()?;
        let terminal = Terminal {
            editor: LineEditor::default(),
            prompt,
            width: usize::from(terminal::size().map_or(80, |(w, _)| w)),
            events: EventStream::new(),
        };
        keep_output_processing()?;
        terminal.draw()?;
        Ok(terminal)
    }

    /// The next submitted line; `None` when the person leaves (Ctrl-C, Ctrl-D on an
    /// empty line) or the terminal is gone. Cancel-safe: what was typed stays in the
    /// editor.
    pub async fn next_line(&mut self) -> io::Result<Option<String>> {
        loop {
            let Some(event) = self.events.next().await.transpose()? else {
                return Ok(None);
            };
            // Apply every event already waiting (a paste is thousands of them) before
            // drawing once.
            let mut event = Some(event);
            let mut edited = false;
            while let Some(next) = event.take() {
                match self.apply(next) {
                    Outcome::Unchanged => {}
                    Outcome::Edited => edited = true,
                    Outcome::Submitted(line) => {
                        // The line stays on the screen, whole, as the terminal would
                        // keep it.
                        self.hide()?;
                        println!("{}{line}", self.prompt);
                        self.show()?;
                        return Ok(Some(line));
                    }
                    Outcome::Leave => {
                        self.clear_row()?;
                        return Ok(None);
                    }
                }
                // Non-blocking: only an event that is already there (polling the
                // stream without its waker would lose the wake-up).
                if crossterm::event::poll(Duration::ZERO)? {
                    event = Some(crossterm::event::read()?);
                }
            }
            if edited {
                self.draw()?;
            }
        }
    }

    /// What one terminal event does to the line.
    fn apply(&mut self, event: Event) -> Outcome {
        match event {
            Event::Key(key) => match editor_key(key) {
                Some(key) => self.editor.key(key),
                None => Outcome::Unchanged,
            },
            Event::Resize(width, _) => {
                self.width = usize::from(width);
                Outcome::Edited
            }
            _ => Outcome::Unchanged,
        }
    }

    /// Clears the prompt row, for whole lines to be printed.
    pub fn hide(&self) -> io::Result<()> {
        self.clear_row()
    }

    /// Draws the prompt and the line being typed again.
    pub fn show(&self) -> io::Result<()> {
        io::stderr().flush()?;
        self.draw()
    }

    fn clear_row(&self) -> io::Result<()> {
        let mut out = io::stdout();
        queue!(out, MoveToColumn(0), Clear(ClearType::CurrentLine))?;
        out.flush()
    }

    fn draw(&self) -> io::Result<()> {
        let view = self.editor.view(&self.prompt, self.width);
        let mut out = io::stdout();
        queue!(out, MoveToColumn(0), Clear(ClearType::CurrentLine))?;
        out.queue(crossterm::style::Print(view.text))?;
        queue!(
            out,
            MoveToColumn(u16::try_from(view.cursor).unwrap_or(u16::MAX))
        )?;
        out.flush()
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = self.clear_row();
        let _ = terminal::disable_raw_mode();
    }
}

/// Turns output processing (`OPOST`, `ONLCR`) back on after crossterm's raw mode.
fn keep_output_processing() -> io::Result<()> {
    use rustix::termios::{tcgetattr, tcsetattr, OptionalActions, OutputModes};
    let stdin = io::stdin();
    let mut modes = tcgetattr(&stdin)?;
    modes.output_modes |= OutputModes::OPOST | OutputModes::ONLCR;
    tcsetattr(&stdin, OptionalActions::Now, &modes)?;
    Ok(())
}

/// The editor's key for a terminal key press (`None`: a key it ignores).
pub fn editor_key(event: KeyEvent) -> Option<Key> {
    if event.kind == KeyEventKind::Release {
        return None;
    }
    let control = event.modifiers.contains(KeyModifiers::CONTROL);
    Some(match event.code {
        KeyCode::Char(c) if control => match c.to_ascii_lowercase() {
            'a' => Key::Edit(Edit::Home),
            'e' => Key::Edit(Edit::End),
            'b' => Key::Edit(Edit::Left),
            'f' => Key::Edit(Edit::Right),
            'h' => Key::Edit(Edit::Backspace),
            'u' => Key::Edit(Edit::KillToStart),
            'k' => Key::Edit(Edit::KillToEnd),
            'w' => Key::Edit(Edit::KillWord),
            'c' => Key::Interrupt,
            'd' => Key::EndOfInput,
            'j' | 'm' => Key::Enter,
            _ => return None,
        },
        KeyCode::Char(c) => Key::Char(c),
        KeyCode::Enter => Key::Enter,
        KeyCode::Tab => Key::Char(' '),
        code => Key::Edit(edit_key(code)?),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

    use super::*;

    #[test]
    fn terminal_keys_map_to_editing_keys() {
        let key = |code, modifiers| editor_key(KeyEvent::new(code, modifiers));
        assert_eq!(
            key(KeyCode::Char('x'), KeyModifiers::NONE),
            Some(Key::Char('x'))
        );
        assert_eq!(
            key(KeyCode::Char('X'), KeyModifiers::SHIFT),
            Some(Key::Char('X'))
        );
        assert_eq!(
            key(KeyCode::Char('c'), KeyModifiers::CONTROL),
            Some(Key::Interrupt)
        );
        assert_eq!(
            key(KeyCode::Char('d'), KeyModifiers::CONTROL),
            Some(Key::EndOfInput)
        );
        assert_eq!(
            key(KeyCode::Char('u'), KeyModifiers::CONTROL),
            Some(Key::Edit(Edit::KillToStart))
        );
        assert_eq!(
            key(KeyCode::Home, KeyModifiers::NONE),
            Some(Key::Edit(Edit::Home))
        );
        assert_eq!(key(KeyCode::Enter, KeyModifiers::NONE), Some(Key::Enter));
        assert_eq!(key(KeyCode::F(1), KeyModifiers::NONE), None);
    }
}
