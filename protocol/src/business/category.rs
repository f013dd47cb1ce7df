//! Message categories. Every business send carries one; a person grants consent per
//! category (`conversation` needs no grant: it is a reply inside the care window).

use serde::{Deserialize, Serialize};

/// What a business message is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    /// Fraud and account-security alerts.
    SecurityAlert,
    /// About a transaction the person made: an order, a booking, a flight.
    Transactional,
    /// One-time codes and login confirmations.
    Authentication,
    /// Offers and promotions.
    Marketing,
    /// A reply within the care window opened by the person's own message; needs no grant.
    Conversation,
}

impl Category {
    /// The categories a person can grant, in bit order.
    pub const GRANTABLE: [Category; 4] = [
        Category::SecurityAlert,
        Category::Transactional,
        Category::Authentication,
        Category::Marketing,
    ];

    /// The name on the wire and on the command line.
    pub const fn as_str(self) -> &'static str {
        match self {
            Category::SecurityAlert => "security_alert",
            Category::Transactional => "transactional",
            Category::Authentication => "authentication",
            Category::Marketing => "marketing",
            Category::Conversation => "conversation",
        }
    }

    /// Parses a name as [`Category::as_str`] writes it (`-` is accepted for `_`).
    pub fn parse(name: &str) -> Option<Category> {
        let name = name.trim().to_ascii_lowercase().replace('-', "_");
        [
            Category::SecurityAlert,
            Category::Transactional,
            Category::Authentication,
            Category::Marketing,
            Category::Conversation,
        ]
        .into_iter()
        .find(|c| c.as_str() == name)
    }

    /// Whether a consent grant can name this category.
    pub const fn is_grantable(self) -> bool {
        !matches!(self, Category::Conversation)
    }

    /// The category's bit in a [`CategorySet`]; `conversation` has none.
    const fn bit(self) -> u8 {
        match self {
            Category::SecurityAlert => 1,
            Category::Transactional => 2,
            Category::Authentication => 4,
            Category::Marketing => 8,
            Category::Conversation => 0,
        }
    }
}

impl std::fmt::Display for Category {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of grantable categories. On the wire a list of names; in signed transcripts one
/// byte: `security_alert` = 1, `transactional` = 2, `authentication` = 4, `marketing` = 8.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct CategorySet(u8);

impl CategorySet {
    /// No category.
    pub const EMPTY: CategorySet = CategorySet(0);
    /// Every grantable category.
    pub const ALL: CategorySet = CategorySet(0b1111);

    /// The set of `categories`; `conversation` is ignored (it cannot be granted).
    pub fn of(categories: impl IntoIterator<Item = Category>) -> CategorySet {
        CategorySet(categories.into_iter().fold(0, |bits, c| bits | c.bit()))
    }

    /// The set a transcript byte names; unknown bits are an error.
    pub fn from_bits(bits: u8) -> Option<CategorySet> {
        (bits & !Self::ALL.0 == 0).then_some(CategorySet(bits))
    }

    /// The transcript byte.
    pub const fn bits(self) -> u8 {
        self.0
    }

    /// Whether `category` is in the set (never true for `conversation`).
    pub const fn contains(self, category: Category) -> bool {
        category.bit() != 0 && self.0 & category.bit() != 0
    }

    /// Whether the set is empty.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Categories in either set.
    pub const fn union(self, other: CategorySet) -> CategorySet {
        CategorySet(self.0 | other.0)
    }

    /// Categories in `self` but not in `other`.
    pub const fn minus(self, other: CategorySet) -> CategorySet {
        CategorySet(self.0 & !other.0)
    }

    /// Categories in both sets.
    pub const fn intersect(self, other: CategorySet) -> CategorySet {
        CategorySet(self.0 & other.0)
    }

    /// The categories, in bit order.
    pub fn iter(self) -> impl Iterator<Item = Category> {
        Category::GRANTABLE
            .into_iter()
            .filter(move |c| self.contains(*c))
    }

    /// Parses a comma-separated list such as `security_alert,transactional`; `all` names
    /// every grantable category.
    pub fn parse_list(list: &str) -> Result<CategorySet, String> {
        let mut set = CategorySet::EMPTY;
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if name.eq_ignore_ascii_case("all") {
                set = set.union(CategorySet::ALL);
                continue;
            }
            match Category::parse(name) {
                Some(c) if c.is_grantable() => set = set.union(CategorySet::of([c])),
                _ => {
                    return Err(format!(
                        "unknown category {name:?}; expected security_alert, transactional, authentication, marketing or all"
                    ))
                }
            }
        }
        Ok(set)
    }
}

impl std::fmt::Debug for CategorySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl std::fmt::Display for CategorySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_empty() {
            return f.write_str("none");
        }
        let names: Vec<&str> = self.iter().map(Category::as_str).collect();
        f.write_str(&names.join(","))
    }
}

impl Serialize for CategorySet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

impl<'de> Deserialize<'de> for CategorySet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = CategorySet;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a list of at most 4 grantable categories")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<CategorySet, A::Error> {
                let mut set = CategorySet::EMPTY;
                for _ in 0..Category::GRANTABLE.len() {
                    match seq.next_element::<Category>()? {
                        Some(c) if c.is_grantable() => set = set.union(CategorySet::of([c])),
                        Some(_) => {
                            return Err(serde::de::Error::custom("conversation is not grantable"))
                        }
                        None => return Ok(set),
                    }
                }
                match seq.next_element::<serde::de::IgnoredAny>()? {
                    None => Ok(set),
                    Some(_) => Err(serde::de::Error::custom("too many categories")),
                }
            }
        }
        d.deserialize_seq(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_conversation_is_not_grantable() {
        for c in Category::GRANTABLE {
            assert_eq!(Category::parse(c.as_str()), Some(c));
            assert!(c.is_grantable());
        }
        assert_eq!(
            Category::parse("security-alert"),
            Some(Category::SecurityAlert)
        );
        assert!(!Category::Conversation.is_grantable());
        assert!(!CategorySet::ALL.contains(Category::Conversation));
        assert_eq!(Category::parse("spam"), None);
    }

    #[test]
    fn set_algebra_and_lists() {
        let set = CategorySet::parse_list("security_alert, marketing").unwrap();
        assert!(set.contains(Category::SecurityAlert) && set.contains(Category::Marketing));
        assert!(!set.contains(Category::Transactional));
        assert_eq!(set.bits(), 0b1001);
        assert_eq!(set.minus(CategorySet::of([Category::Marketing])).bits(), 1);
        assert_eq!(CategorySet::parse_list("all").unwrap(), CategorySet::ALL);
        assert!(CategorySet::parse_list("conversation").is_err());
        assert_eq!(CategorySet::from_bits(0x10), None);
        assert_eq!(set.to_string(), "security_alert,marketing");
    }

    #[test]
    fn sets_encode_as_lists_and_refuse_conversation() {
        let set = CategorySet::of([Category::Transactional, Category::Authentication]);
        let bytes = rmp_serde::to_vec_named(&set).unwrap();
        assert_eq!(rmp_serde::from_slice::<CategorySet>(&bytes).unwrap(), set);
        let bad = rmp_serde::to_vec_named(&[Category::Conversation]).unwrap();
        assert!(rmp_serde::from_slice::<CategorySet>(&bad).is_err());
        let long = rmp_serde::to_vec_named(&[Category::Marketing; 5]).unwrap();
        assert!(rmp_serde::from_slice::<CategorySet>(&long).is_err());
    }
}
