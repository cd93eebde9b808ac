//! Reference tables (see `reference/SOURCES.md` for sources and licences).
//!
//! Shipped inside the binary and validated when loaded, so a worker with a
//! broken table refuses to start instead of enriching wrongly.

use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Why a table did not load.
#[derive(Debug, thiserror::Error)]
#[error("reference/{table} line {line}: expected {expected}, found {found}")]
pub struct ReferenceError {
    /// File name.
    pub table: &'static str,
    /// 1-based line.
    pub line: usize,
    /// What the row should hold.
    pub expected: String,
    /// What it held.
    pub found: String,
}

/// JIS X 0401 prefecture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prefecture {
    /// Two-digit code.
    pub code: String,
    /// 大阪府
    pub name_ja: String,
    /// Osaka
    pub name_en: String,
    /// Member of the Kansai Union.
    pub kansai_union: bool,
}

/// A municipality (JIS X 0402).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Municipality {
    /// Five-digit code.
    pub code: String,
    /// Prefecture code.
    pub prefecture: String,
    /// 大阪市
    pub name_ja: String,
    /// Three-digit postal prefixes.
    pub postal_prefixes: Vec<String>,
    /// Telephone area code, with the leading 0.
    pub phone_area: String,
}

/// An ICD-10 chapter or block: a range of 3-character categories.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Icd10Range {
    /// Chapter in Roman numerals.
    pub chapter: String,
    /// First category, e.g. E10.
    pub first: String,
    /// Last category, e.g. E14.
    pub last: String,
    /// English title.
    pub title_en: String,
    /// Japanese title (chapters only).
    pub title_ja: Option<String>,
}

impl Icd10Range {
    /// `E10-E14`.
    pub fn range(&self) -> String {
        format!("{}-{}", self.first, self.last)
    }
    fn contains(&self, cat: &str) -> bool {
        self.first.as_str() <= cat && cat <= self.last.as_str()
    }
}

/// 特定健診 judgement of one measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Judgement {
    /// Not measured.
    Unknown,
    /// Below the guidance level.
    Normal,
    /// 保健指導判定値
    Guidance,
    /// 受診勧奨判定値
    Referral,
}

impl Judgement {
    /// The value written to the lake.
    pub fn as_str(self) -> &'static str {
        match self {
            Judgement::Unknown => "unknown",
            Judgement::Normal => "normal",
            Judgement::Guidance => "guidance",
            Judgement::Referral => "referral",
        }
    }
}

/// One threshold row.
#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    /// Item name.
    pub item: String,
    /// Checkup field it applies to.
    pub field: String,
    /// Unit.
    pub unit: String,
    /// `all`, `male` or `female`.
    pub sex: String,
    /// True when a high value is worse.
    pub high_is_worse: bool,
    /// 保健指導判定値.
    pub guidance: f64,
    /// 受診勧奨判定値, where one exists.
    pub referral: Option<f64>,
}

impl Threshold {
    /// Judges one value.
    pub fn judge(&self, v: f64) -> Judgement {
        let meets = |t: f64| if self.high_is_worse { v >= t } else { v <= t };
        if self.referral.is_some_and(meets) {
            Judgement::Referral
        } else if meets(self.guidance) {
            Judgement::Guidance
        } else {
            Judgement::Normal
        }
    }
}

/// YJ therapeutic category (薬効分類, 3 digits).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YjCategory {
    /// Three digits.
    pub code: String,
    /// Japanese name.
    pub name_ja: String,
    /// English name.
    pub name_en: String,
}

/// All reference tables.
#[derive(Debug, Clone)]
pub struct Reference {
    prefectures: Vec<Prefecture>,
    municipalities: Vec<Municipality>,
    chapters: Vec<Icd10Range>,
    blocks: Vec<Icd10Range>,
    thresholds: Vec<Threshold>,
    yj: HashMap<String, YjCategory>,
    age_bands: Vec<(String, u32, Option<u32>)>,
    vocabularies: BTreeMap<String, BTreeSet<String>>,
}

/// How a value is compared with a vocabulary: NFKC (full-width and
/// half-width forms alike), spaces removed, `µ` (micro sign) as `μ`.
pub fn vocabulary_form(s: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    s.nfkc()
        .filter(|c| !c.is_whitespace())
        .map(|c| if c == '\u{b5}' { 'μ' } else { c })
        .collect()
}

/// Splits one CSV line; double quotes protect commas.
fn split_csv(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    out.push(cur);
    out
}

fn rows(
    table: &'static str,
    text: &str,
    header: &str,
) -> Result<Vec<(usize, Vec<String>)>, ReferenceError> {
    let mut lines = text.lines().enumerate();
    match lines.next() {
        Some((_, h)) if h == header => {}
        other => {
            return Err(ReferenceError {
                table,
                line: 1,
                expected: format!("the header {header}"),
                found: other.map_or("nothing".into(), |(_, h)| h.to_owned()),
            });
        }
    }
    let n = header.split(',').count();
    lines
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            let cols = split_csv(l);
            if cols.len() != n {
                return Err(ReferenceError {
                    table,
                    line: i + 1,
                    expected: format!("{n} columns"),
                    found: format!("{} columns", cols.len()),
                });
            }
            Ok((i + 1, cols))
        })
        .collect()
}

fn bad(table: &'static str, line: usize, expected: &str, found: &str) -> ReferenceError {
    ReferenceError {
        table,
        line,
        expected: expected.to_owned(),
        found: found.to_owned(),
    }
}

fn is_category(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 3 && b[0].is_ascii_uppercase() && b[1].is_ascii_digit() && b[2].is_ascii_digit()
}

fn ranges_ordered(
    table: &'static str,
    list: &[Icd10Range],
    disjoint: bool,
) -> Result<(), ReferenceError> {
    for (i, r) in list.iter().enumerate() {
        if !is_category(&r.first) || !is_category(&r.last) || r.first > r.last {
            return Err(bad(
                table,
                i + 2,
                "a range of 3-character categories, first ≤ last",
                &r.range(),
            ));
        }
        if disjoint && i > 0 && list[i - 1].last >= r.first {
            return Err(bad(
                table,
                i + 2,
                "ranges in order, not overlapping",
                &r.range(),
            ));
        }
    }
    Ok(())
}

impl Reference {
    /// Loads and validates the shipped tables.
    pub fn load() -> Result<Self, ReferenceError> {
        const P: &str = include_str!("../reference/prefectures.csv");
        const M: &str = include_str!("../reference/municipalities.csv");
        const C: &str = include_str!("../reference/icd10_chapters.csv");
        const B: &str = include_str!("../reference/icd10_blocks.csv");
        const T: &str = include_str!("../reference/checkup_thresholds.csv");
        const Y: &str = include_str!("../reference/yj_categories.csv");
        const A: &str = include_str!("../reference/age_bands.csv");
        const V: &str = include_str!("../reference/vocabularies.csv");

        let mut prefectures = Vec::new();
        for (line, c) in rows("prefectures.csv", P, "code,name_ja,name_en,kansai_union")? {
            let expect_code = format!("{:02}", prefectures.len() + 1);
            if c[0] != expect_code {
                return Err(bad(
                    "prefectures.csv",
                    line,
                    &format!("code {expect_code}"),
                    &c[0],
                ));
            }
            let kansai_union = match c[3].as_str() {
                "true" => true,
                "false" => false,
                x => return Err(bad("prefectures.csv", line, "true or false", x)),
            };
            prefectures.push(Prefecture {
                code: c[0].clone(),
                name_ja: c[1].clone(),
                name_en: c[2].clone(),
                kansai_union,
            });
        }

        let mut municipalities = Vec::new();
        for (line, c) in rows(
            "municipalities.csv",
            M,
            "code,prefecture,name_ja,postal_prefixes,phone_area",
        )? {
            if c[0].len() != 5
                || !c[0].bytes().all(|b| b.is_ascii_digit())
                || !c[0].starts_with(&c[1])
            {
                return Err(bad(
                    "municipalities.csv",
                    line,
                    "a 5-digit code starting with its prefecture",
                    &c[0],
                ));
            }
            let postal_prefixes: Vec<String> = c[3].split(' ').map(str::to_owned).collect();
            if postal_prefixes
                .iter()
                .any(|p| p.len() != 3 || !p.bytes().all(|b| b.is_ascii_digit()))
            {
                return Err(bad(
                    "municipalities.csv",
                    line,
                    "3-digit postal prefixes separated by spaces",
                    &c[3],
                ));
            }
            if !c[4].starts_with('0') {
                return Err(bad(
                    "municipalities.csv",
                    line,
                    "an area code starting with 0",
                    &c[4],
                ));
            }
            municipalities.push(Municipality {
                code: c[0].clone(),
                prefecture: c[1].clone(),
                name_ja: c[2].clone(),
                postal_prefixes,
                phone_area: c[4].clone(),
            });
        }

        let chapters: Vec<Icd10Range> = rows(
            "icd10_chapters.csv",
            C,
            "chapter,first,last,title_en,title_ja",
        )?
        .into_iter()
        .map(|(_, c)| Icd10Range {
            chapter: c[0].clone(),
            first: c[1].clone(),
            last: c[2].clone(),
            title_en: c[3].clone(),
            title_ja: Some(c[4].clone()),
        })
        .collect();
        // Chapters are listed in WHO order, which is not alphabetical
        // (XXII U00-U99 comes last), so check each range but not the order.
        ranges_ordered("icd10_chapters.csv", &chapters, false)?;
        let mut sorted = chapters.clone();
        sorted.sort_by(|a, b| a.first.cmp(&b.first));
        ranges_ordered("icd10_chapters.csv", &sorted, true)?;

        let blocks: Vec<Icd10Range> = rows("icd10_blocks.csv", B, "first,last,chapter,title_en")?
            .into_iter()
            .map(|(_, c)| Icd10Range {
                chapter: c[2].clone(),
                first: c[0].clone(),
                last: c[1].clone(),
                title_en: c[3].clone(),
                title_ja: None,
            })
            .collect();
        ranges_ordered("icd10_blocks.csv", &blocks, true)?;
        for (i, b) in blocks.iter().enumerate() {
            let ch = chapters.iter().find(|c| c.chapter == b.chapter);
            if !ch.is_some_and(|c| c.contains(&b.first) && c.contains(&b.last)) {
                return Err(bad(
                    "icd10_blocks.csv",
                    i + 2,
                    "a block inside its chapter",
                    &b.range(),
                ));
            }
        }

        let mut thresholds = Vec::new();
        for (line, c) in rows(
            "checkup_thresholds.csv",
            T,
            "item,field,unit,sex,direction,guidance,referral",
        )? {
            let num = |s: &str| {
                s.parse::<f64>()
                    .map_err(|_| bad("checkup_thresholds.csv", line, "a number", s))
            };
            let high_is_worse = match c[4].as_str() {
                "high" => true,
                "low" => false,
                x => return Err(bad("checkup_thresholds.csv", line, "high or low", x)),
            };
            if !matches!(c[3].as_str(), "all" | "male" | "female") {
                return Err(bad(
                    "checkup_thresholds.csv",
                    line,
                    "all, male or female",
                    &c[3],
                ));
            }
            let guidance = num(&c[5])?;
            let referral = if c[6].is_empty() {
                None
            } else {
                Some(num(&c[6])?)
            };
            if let Some(r) = referral
                && (high_is_worse && r <= guidance || !high_is_worse && r >= guidance)
            {
                return Err(bad(
                    "checkup_thresholds.csv",
                    line,
                    "the referral level beyond the guidance level",
                    &c[6],
                ));
            }
            thresholds.push(Threshold {
                item: c[0].clone(),
                field: c[1].clone(),
                unit: c[2].clone(),
                sex: c[3].clone(),
                high_is_worse,
                guidance,
                referral,
            });
        }

        let mut yj = HashMap::new();
        for (line, c) in rows("yj_categories.csv", Y, "code,name_ja,name_en")? {
            if c[0].len() != 3 || !c[0].bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad("yj_categories.csv", line, "a 3-digit category", &c[0]));
            }
            yj.insert(
                c[0].clone(),
                YjCategory {
                    code: c[0].clone(),
                    name_ja: c[1].clone(),
                    name_en: c[2].clone(),
                },
            );
        }

        let mut age_bands = Vec::new();
        let mut next_low = 0u32;
        for (line, c) in rows("age_bands.csv", A, "band,low,high")? {
            let low: u32 = c[1]
                .parse()
                .map_err(|_| bad("age_bands.csv", line, "an integer", &c[1]))?;
            if low != next_low {
                return Err(bad(
                    "age_bands.csv",
                    line,
                    &format!("a band starting at {next_low}"),
                    &c[1],
                ));
            }
            let high = if c[2].is_empty() {
                None
            } else {
                Some(
                    c[2].parse::<u32>()
                        .map_err(|_| bad("age_bands.csv", line, "an integer", &c[2]))?,
                )
            };
            next_low = high.map_or(u32::MAX, |h| h + 1);
            age_bands.push((c[0].clone(), low, high));
        }
        if age_bands.last().is_none_or(|b| b.2.is_some()) {
            return Err(bad(
                "age_bands.csv",
                age_bands.len() + 1,
                "an open last band (top code)",
                "a closed one",
            ));
        }

        let mut vocabularies: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (line, c) in rows("vocabularies.csv", V, "list,value")? {
            let v = vocabulary_form(&c[1]);
            if v.is_empty() || !vocabularies.entry(c[0].clone()).or_default().insert(v) {
                return Err(bad(
                    "vocabularies.csv",
                    line,
                    "a value not empty and not listed twice",
                    &c[1],
                ));
            }
        }

        Ok(Reference {
            vocabularies,
            prefectures,
            municipalities,
            chapters,
            blocks,
            thresholds,
            yj,
            age_bands,
        })
    }

    /// A prefecture by JIS X 0401 code.
    pub fn prefecture(&self, code: &str) -> Option<&Prefecture> {
        let i: usize = code.parse().ok()?;
        self.prefectures
            .get(i.checked_sub(1)?)
            .filter(|p| p.code == code)
    }

    /// The eight members of the Kansai Union.
    pub fn kansai_union(&self) -> impl Iterator<Item = &Prefecture> {
        self.prefectures.iter().filter(|p| p.kansai_union)
    }

    /// A municipality by its 5-digit code (a 6th check digit is ignored).
    pub fn municipality(&self, code: &str) -> Option<&Municipality> {
        let code = code.get(..5)?;
        self.municipalities.iter().find(|m| m.code == code)
    }

    /// The municipalities listed for a prefecture.
    pub fn municipalities_of<'a>(
        &'a self,
        prefecture: &'a str,
    ) -> impl Iterator<Item = &'a Municipality> {
        self.municipalities
            .iter()
            .filter(move |m| m.prefecture == prefecture)
    }

    /// The ICD-10 chapter of a code such as `E11.9` or `E119`.
    pub fn icd10_chapter(&self, code: &str) -> Option<&Icd10Range> {
        let cat = code.get(..3)?;
        self.chapters.iter().find(|c| c.contains(cat))
    }

    /// The ICD-10 block of a code, where the table has it.
    pub fn icd10_block(&self, code: &str) -> Option<&Icd10Range> {
        let cat = code.get(..3)?;
        self.blocks.iter().find(|b| b.contains(cat))
    }

    /// Thresholds for a checkup field and sex (`male`, `female`).
    pub fn threshold(&self, field: &str, sex: &str) -> Option<&Threshold> {
        self.thresholds
            .iter()
            .find(|t| t.field == field && (t.sex == "all" || t.sex == sex))
    }

    /// Every threshold row.
    pub fn thresholds(&self) -> &[Threshold] {
        &self.thresholds
    }

    /// The therapeutic category of a YJ code.
    pub fn yj_category(&self, yj_code: &str) -> Option<&YjCategory> {
        self.yj.get(yj_code.get(..3)?)
    }

    /// The names of the vocabularies (free-text fields kept only when a
    /// value is one of a list's).
    pub fn vocabulary_names(&self) -> impl Iterator<Item = &str> {
        self.vocabularies.keys().map(String::as_str)
    }

    /// The listed value equal to `value` (in [`vocabulary_form`]), if any.
    pub fn vocabulary_value<'a>(&'a self, list: &str, value: &str) -> Option<&'a str> {
        let set = self.vocabularies.get(list)?;
        if let Some(v) = set.get(value) {
            return Some(v.as_str());
        }
        set.get(&vocabulary_form(value)).map(String::as_str)
    }

    /// The 5-year band of an age, top-coded at 90+.
    pub fn age_band(&self, age: u32) -> &str {
        self.age_bands
            .iter()
            .find(|(_, lo, hi)| age >= *lo && hi.is_none_or(|h| age <= h))
            .map(|(b, _, _)| b.as_str())
            .expect("bands cover every age (checked at load)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r() -> Reference {
        Reference::load().expect("shipped tables are valid")
    }

    #[test]
    fn kansai_union_is_the_eight_members_of_design_md() {
        let codes: Vec<_> = r().kansai_union().map(|p| p.code.clone()).collect();
        assert_eq!(codes, ["25", "26", "27", "28", "29", "30", "31", "36"]);
        assert_eq!(r().prefecture("27").unwrap().name_ja, "大阪府");
        assert!(r().prefecture("48").is_none());
        assert!(r().prefecture("7").is_none());
    }

    #[test]
    fn every_kansai_prefecture_has_municipalities() {
        let r = r();
        for p in r.kansai_union() {
            assert!(r.municipalities_of(&p.code).count() >= 3, "{}", p.code);
        }
        assert_eq!(r.municipality("271004").unwrap().name_ja, "大阪市");
    }

    #[test]
    fn icd10_rolls_up_to_block_and_chapter() {
        let r = r();
        assert_eq!(r.icd10_chapter("E11.9").unwrap().chapter, "IV");
        assert_eq!(r.icd10_block("E11.9").unwrap().range(), "E10-E14");
        assert_eq!(r.icd10_chapter("T14").unwrap().chapter, "XIX");
        assert_eq!(r.icd10_chapter("U07.1").unwrap().chapter, "XXII");
        assert_eq!(r.icd10_chapter("H66").unwrap().chapter, "VIII");
        assert!(r.icd10_block("E50").is_none(), "not every block is listed");
        assert!(r.icd10_chapter("").is_none());
    }

    #[test]
    fn checkup_judgements_follow_the_program_thresholds() {
        let r = r();
        let sbp = r.threshold("systolic_bp", "male").unwrap();
        assert_eq!(sbp.judge(129.0), Judgement::Normal);
        assert_eq!(sbp.judge(130.0), Judgement::Guidance);
        assert_eq!(sbp.judge(140.0), Judgement::Referral);
        let hdl = r.threshold("hdl_mg_dl", "female").unwrap();
        assert_eq!(hdl.judge(60.0), Judgement::Normal);
        assert_eq!(hdl.judge(39.0), Judgement::Guidance);
        assert_eq!(hdl.judge(34.0), Judgement::Referral);
        assert_eq!(r.threshold("waist_cm", "male").unwrap().guidance, 85.0);
        assert_eq!(r.threshold("waist_cm", "female").unwrap().guidance, 90.0);
    }

    #[test]
    fn yj_and_age_bands() {
        let r = r();
        assert_eq!(
            r.yj_category("2171022F1020").unwrap().name_en,
            "Vasodilators"
        );
        assert_eq!(r.age_band(0), "0-4");
        assert_eq!(r.age_band(44), "40-44");
        assert_eq!(r.age_band(90), "90+");
        assert_eq!(r.age_band(117), "90+");
    }

    #[test]
    fn csv_quotes_protect_commas() {
        assert_eq!(split_csv(r#"IV,E00,"a, b",c"#), ["IV", "E00", "a, b", "c"]);
    }
}
