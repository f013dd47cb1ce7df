//! The terminal while the view runs: raw mode, the alternate screen and bracketed paste
//! on entry, and all of it undone when the [`Screen`] is dropped (a normal exit or an
//! error) or when the process panics (ratatui's panic hook restores it first).

use std::io::{stdout, Write};

use crossterm::event::{DisableBracketedPaste, EnableBracketedPaste};
use crossterm::execute;
use ratatui::{DefaultTerminal, Frame};

/// The terminal, taken over; given back on drop.
#[derive(Debug)]
pub struct Screen {
    terminal: DefaultTerminal,
}

impl Screen {
    /// Takes the terminal over.
    pub fn enter() -> std::io::Result<Screen> {
        let terminal = ratatui::try_init()?;
        let screen = Screen { terminal };
        execute!(stdout(), EnableBracketedPaste)?;
        Ok(screen)
    }

    /// Draws one frame.
    pub fn draw(&mut self, render: impl FnOnce(&mut Frame)) -> std::io::Result<()> {
        self.terminal.draw(render).map(|_| ())
    }

    /// Rings the terminal bell.
    pub fn bell(&mut self) -> std::io::Result<()> {
        let mut out = stdout();
        out.write_all(b"\x07")?;
        out.flush()
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        // Nothing better to do with an error here: the process is leaving the view.
        let _ = execute!(stdout(), DisableBracketedPaste);
        let _ = self.terminal.show_cursor();
        ratatui::restore();
    }
}
