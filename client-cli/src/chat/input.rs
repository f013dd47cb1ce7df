//! Where `chat` reads typed lines from: the terminal, key by key ([`Terminal`]), when
//! both standard input and standard output are one; else standard input line by line
//! (scripts, tests, a pipe), where nothing is drawn and lines are taken as they come.

use std::io::{self, IsTerminal};

use tokio::io::{AsyncBufReadExt, BufReader, Lines, Stdin};

use super::terminal::Terminal;

/// The source of typed lines.
#[derive(Debug)]
pub enum ChatInput {
    /// A terminal in raw mode with a line editor.
    Terminal(Terminal),
    /// Standard input, line by line.
    Lines(Lines<BufReader<Stdin>>),
}

impl ChatInput {
    /// The terminal (with `prompt` drawn) if there is one, else standard input.
    pub fn open(prompt: String) -> io::Result<ChatInput> {
        if io::stdin().is_terminal() && io::stdout().is_terminal() {
            Ok(ChatInput::Terminal(Terminal::open(prompt)?))
        } else {
            Ok(ChatInput::Lines(BufReader::new(tokio::io::stdin()).lines()))
        }
    }

    /// The next line; `None` when the person leaves or the input ends. Cancel-safe.
    pub async fn next_line(&mut self) -> io::Result<Option<String>> {
        match self {
            ChatInput::Terminal(terminal) => terminal.next_line().await,
            ChatInput::Lines(lines) => lines.next_line().await,
        }
    }

    /// Runs `print` so that its lines appear above the line being typed, which is
    /// drawn again below them.
    pub fn above<T>(&self, print: impl FnOnce() -> T) -> io::Result<T> {
        self.hide()?;
        let result = print();
        self.show()?;
        Ok(result)
    }

    /// Clears the prompt row, for whole lines to be printed (then [`ChatInput::show`]).
    pub fn hide(&self) -> io::Result<()> {
        match self {
            ChatInput::Terminal(terminal) => terminal.hide(),
            ChatInput::Lines(_) => Ok(()),
        }
    }

    /// Draws the prompt and the line being typed again, below what was printed.
    pub fn show(&self) -> io::Result<()> {
        match self {
            ChatInput::Terminal(terminal) => terminal.show(),
            ChatInput::Lines(_) => Ok(()),
        }
    }
}
