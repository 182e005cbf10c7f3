//! Headers and trailers: ordered lists of strings, usually `key=value`.

/// An ordered list of strings, usually `key=value`.
///
/// Any UTF-8 survives the trip unchanged: commas, `=`, `&`, `%`, newlines, empty strings.
#[derive(Debug, Clone, PartialEq, Eq, Default, Hash)]
pub struct Headers(Vec<String>);

impl Headers {
    /// No headers.
    pub const fn new() -> Headers {
        Headers(Vec::new())
    }

    /// The value of the first `key=value` entry with this key.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find_map(|h| {
            let (k, v) = h.split_once('=')?;
            (k == key).then_some(v)
        })
    }

    /// Every value for this key, in order.
    pub fn get_all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0.iter().filter_map(move |h| {
            let (k, v) = h.split_once('=')?;
            (k == key).then_some(v)
        })
    }

    /// Appends an entry.
    pub fn push(&mut self, entry: impl Into<String>) {
        self.0.push(entry.into());
    }

    /// Appends `key=value`.
    pub fn insert(&mut self, key: &str, value: &str) {
        self.0.push(format!("{key}={value}"));
    }

    /// The entries, in order.
    pub fn iter(&self) -> std::slice::Iter<'_, String> {
        self.0.iter()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True if there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The entries as a slice.
    pub fn as_slice(&self) -> &[String] {
        &self.0
    }
}

impl From<Vec<String>> for Headers {
    fn from(v: Vec<String>) -> Headers {
        Headers(v)
    }
}

impl From<Headers> for Vec<String> {
    fn from(h: Headers) -> Vec<String> {
        h.0
    }
}

impl From<&[&str]> for Headers {
    fn from(v: &[&str]) -> Headers {
        Headers(v.iter().map(|s| (*s).to_owned()).collect())
    }
}

impl<const N: usize> From<[&str; N]> for Headers {
    fn from(v: [&str; N]) -> Headers {
        Headers(v.iter().map(|s| (*s).to_owned()).collect())
    }
}

impl<const N: usize> From<[String; N]> for Headers {
    fn from(v: [String; N]) -> Headers {
        Headers(v.into())
    }
}

impl From<()> for Headers {
    fn from((): ()) -> Headers {
        Headers::new()
    }
}

impl FromIterator<String> for Headers {
    fn from_iter<I: IntoIterator<Item = String>>(iter: I) -> Headers {
        Headers(iter.into_iter().collect())
    }
}

impl<'a> IntoIterator for &'a Headers {
    type Item = &'a String;
    type IntoIter = std::slice::Iter<'a, String>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_splits_at_the_first_equals() {
        let h = Headers::from(["a=1", "b=x=y", "a=2", "plain", "=empty-key", "c="]);
        assert_eq!(h.get("a"), Some("1"));
        assert_eq!(h.get_all("a").collect::<Vec<_>>(), ["1", "2"]);
        assert_eq!(h.get("b"), Some("x=y"));
        assert_eq!(h.get("plain"), None);
        assert_eq!(h.get(""), Some("empty-key"));
        assert_eq!(h.get("c"), Some(""));
    }
}
