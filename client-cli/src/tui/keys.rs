//! Which key does what: one table from a terminal key to an [`Intent`], used by the app
//! and by the help overlay (so the help can never disagree with the keys).

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use crate::line_edit::{edit_key, Edit};

/// What a key asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Intent {
    /// Leave the view.
    Quit,
    /// Show or hide the list of keys.
    Help,
    /// Open the previous conversation in the list.
    Previous,
    /// Open the next conversation in the list.
    Next,
    /// Scroll the open conversation back.
    ScrollBack,
    /// Scroll the open conversation forward.
    ScrollForward,
    /// Send the line (or run a `/command`).
    Enter,
    /// Answer the newest open card of this conversation: choose an action.
    AnswerCard,
    /// What this business may send: grant or withdraw consent.
    Consent,
    /// Block, unblock or report this account.
    Moderate,
    /// Close an overlay.
    Close,
    /// A character: typed into the line, or a choice in an overlay.
    Char(char),
    /// Line editing (the keys every line editor of this client shares, and Ctrl-U).
    Edit(Edit),
}

/// The keys, as the help overlay and `parley tui --help` list them.
pub const HELP: &[(&str, &str)] = &[
    ("Enter", "send the line (or run /open HANDLE, /help, /quit)"),
    ("Up / Down", "open the previous / next conversation"),
    ("PgUp / PgDn", "scroll the conversation"),
    ("Ctrl-A", "answer the newest card: then its action's number"),
    (
        "Ctrl-O",
        "consent for a verified business: 1-4 toggle, 0 all off",
    ),
    ("Ctrl-B", "b block, u unblock, r report this account"),
    ("F1", "this help (Esc closes it)"),
    ("Ctrl-C / Ctrl-Q", "quit"),
];

/// The keys as a block of text, for `parley tui --help`.
pub fn help_text() -> String {
    let mut text = String::from("Keys:\n");
    for (key, what) in HELP {
        text.push_str(&format!("  {key:<16} {what}\n"));
    }
    text
}

/// The intent of a key press (releases and repeats of modifiers mean nothing).
pub fn intent(key: KeyEvent) -> Option<Intent> {
    if key.kind == KeyEventKind::Release {
        return None;
    }
    let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
    Some(match key.code {
        KeyCode::Char('c' | 'q') if ctrl => Intent::Quit,
        KeyCode::Char('a') if ctrl => Intent::AnswerCard,
        KeyCode::Char('o') if ctrl => Intent::Consent,
        KeyCode::Char('b') if ctrl => Intent::Moderate,
        KeyCode::Char('u') if ctrl => Intent::Edit(Edit::KillToStart),
        KeyCode::Char('p') if ctrl => Intent::Previous,
        KeyCode::Char('n') if ctrl => Intent::Next,
        KeyCode::Char(_) if ctrl => return None,
        KeyCode::Char(c) => Intent::Char(c),
        KeyCode::F(1) => Intent::Help,
        KeyCode::Enter => Intent::Enter,
        KeyCode::Esc => Intent::Close,
        KeyCode::Up => Intent::Previous,
        KeyCode::Down => Intent::Next,
        KeyCode::PageUp => Intent::ScrollBack,
        KeyCode::PageDown => Intent::ScrollForward,
        code => Intent::Edit(edit_key(code)?),
    })
}
