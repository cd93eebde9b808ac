//! Word lists for synthetic identities and clinical content. Every name,
//! address and number the generator makes is invented; the clinical codes
//! are real codes or code-shaped, as each list says.

/// (kanji, katakana) surnames, common in Kansai.
pub const SURNAMES: &[(&str, &str)] = &[
    ("田中", "タナカ"),
    ("山本", "ヤマモト"),
    ("中村", "ナカムラ"),
    ("松本", "マツモト"),
    ("井上", "イノウエ"),
    ("吉田", "ヨシダ"),
    ("山田", "ヤマダ"),
    ("西村", "ニシムラ"),
    ("北村", "キタムラ"),
    ("藤原", "フジワラ"),
    ("中川", "ナカガワ"),
    ("上田", "ウエダ"),
    ("佐藤", "サトウ"),
    ("鈴木", "スズキ"),
    ("高橋", "タカハシ"),
    ("伊藤", "イトウ"),
    ("渡辺", "ワタナベ"),
    ("小林", "コバヤシ"),
    ("加藤", "カトウ"),
    ("山口", "ヤマグチ"),
    ("木村", "キムラ"),
    ("林", "ハヤシ"),
    ("清水", "シミズ"),
    ("池田", "イケダ"),
    ("橋本", "ハシモト"),
    ("前田", "マエダ"),
    ("藤田", "フジタ"),
    ("岡田", "オカダ"),
    ("松田", "マツダ"),
    ("森", "モリ"),
];

/// (kanji, katakana) given names, male.
pub const GIVEN_MALE: &[(&str, &str)] = &[
    ("翔太", "ショウタ"),
    ("大輔", "ダイスケ"),
    ("健一", "ケンイチ"),
    ("誠", "マコト"),
    ("浩", "ヒロシ"),
    ("隆", "タカシ"),
    ("蓮", "レン"),
    ("悠真", "ユウマ"),
    ("和夫", "カズオ"),
    ("茂", "シゲル"),
    ("拓也", "タクヤ"),
    ("直樹", "ナオキ"),
];

/// (kanji, katakana) given names, female.
pub const GIVEN_FEMALE: &[(&str, &str)] = &[
    ("陽子", "ヨウコ"),
    ("恵子", "ケイコ"),
    ("美咲", "ミサキ"),
    ("結衣", "ユイ"),
    ("花子", "ハナコ"),
    ("幸子", "サチコ"),
    ("由美", "ユミ"),
    ("真由美", "マユミ"),
    ("愛", "アイ"),
    ("陽菜", "ヒナ"),
    ("和子", "カズコ"),
    ("久美子", "クミコ"),
];

/// Town names below a municipality.
pub const TOWNS: &[&str] = &[
    "本町", "中央", "栄町", "旭町", "緑町", "桜町", "東町", "西町", "南町", "北町", "新町", "寺町",
];

/// Building names, for some addresses.
pub const BUILDINGS: &[&str] = &["コーポ", "ハイツ", "マンション", "レジデンス"];

/// ICD-10 codes with relative outpatient frequencies and Japanese names
/// (real WHO ICD-10 codes; weights are plausible, not measured).
pub const DIAGNOSES: &[(&str, &str, u32)] = &[
    ("I10", "本態性高血圧症", 160),
    ("E11.9", "2型糖尿病", 110),
    ("E78.5", "脂質異常症", 100),
    ("J06.9", "急性上気道炎", 80),
    ("K21.9", "逆流性食道炎", 45),
    ("K29.7", "胃炎", 40),
    ("M54.5", "腰痛症", 45),
    ("J30.4", "アレルギー性鼻炎", 40),
    ("J45.9", "気管支喘息", 25),
    ("F32.9", "うつ病", 20),
    ("G47.0", "不眠症", 30),
    ("N18.9", "慢性腎臓病", 20),
    ("I25.1", "狭心症", 20),
    ("I48.9", "心房細動", 15),
    ("I50.9", "心不全", 15),
    ("I63.9", "脳梗塞", 12),
    ("E03.9", "甲状腺機能低下症", 10),
    ("M17.9", "変形性膝関節症", 25),
    ("M81.9", "骨粗鬆症", 20),
    ("H25.9", "白内障", 15),
    ("H40.9", "緑内障", 12),
    ("K59.0", "便秘症", 25),
    ("L20.9", "アトピー性皮膚炎", 12),
    ("J18.9", "肺炎", 8),
    ("A09", "感染性胃腸炎", 12),
    ("B02.9", "帯状疱疹", 5),
    ("B18.2", "慢性C型肝炎", 3),
    ("K74.6", "肝硬変", 2),
    ("D64.9", "貧血", 10),
    ("E66.9", "肥満症", 6),
    ("N39.0", "尿路感染症", 8),
    ("N40", "前立腺肥大症", 10),
    ("G30.9", "アルツハイマー型認知症", 6),
    ("S72.0", "大腿骨頚部骨折", 2),
    ("C16.9", "胃癌", 3),
    ("C34.9", "肺癌", 3),
    ("C50.9", "乳癌", 3),
    ("U07.1", "COVID-19", 5),
];

/// Laboratory tests: JLAC10-shaped codes (analyte 5, identification 4,
/// material 3, method 3, result 2), name, unit, mean, sd, reference range,
/// decimals, log-normal.
pub struct LabTest {
    /// 17-character code.
    pub jlac10: &'static str,
    /// Local name.
    pub name: &'static str,
    /// Unit.
    pub unit: &'static str,
    /// Mean of the distribution.
    pub mean: f64,
    /// Spread.
    pub sd: f64,
    /// Lower reference limit.
    pub low: f64,
    /// Upper reference limit.
    pub high: f64,
    /// Decimals shown.
    pub decimals: i32,
    /// Relative frequency.
    pub weight: u32,
}

macro_rules! lab {
    ($c:literal, $n:literal, $u:literal, $m:literal, $s:literal, $lo:literal, $hi:literal, $d:literal, $w:literal) => {
        LabTest {
            jlac10: $c,
            name: $n,
            unit: $u,
            mean: $m,
            sd: $s,
            low: $lo,
            high: $hi,
            decimals: $d,
            weight: $w,
        }
    };
}

/// The test menu.
pub const LAB_TESTS: &[LabTest] = &[
    lab!(
        "3D046000001906202",
        "HbA1c(NGSP)",
        "%",
        5.9,
        0.8,
        4.9,
        6.0,
        1,
        30
    ),
    lab!(
        "3D010000001926101",
        "血糖",
        "mg/dL",
        108.0,
        25.0,
        73.0,
        109.0,
        0,
        30
    ),
    lab!(
        "3B035000002327201",
        "AST",
        "U/L",
        25.0,
        10.0,
        13.0,
        30.0,
        0,
        40
    ),
    lab!(
        "3B045000002327201",
        "ALT",
        "U/L",
        23.0,
        13.0,
        10.0,
        42.0,
        0,
        40
    ),
    lab!(
        "3B090000002327101",
        "γ-GT",
        "U/L",
        35.0,
        28.0,
        13.0,
        64.0,
        0,
        35
    ),
    lab!(
        "3F015000002327101",
        "中性脂肪",
        "mg/dL",
        130.0,
        65.0,
        40.0,
        149.0,
        0,
        35
    ),
    lab!(
        "3F070000002327101",
        "HDL-コレステロール",
        "mg/dL",
        58.0,
        14.0,
        40.0,
        90.0,
        0,
        35
    ),
    lab!(
        "3F077000002327101",
        "LDL-コレステロール",
        "mg/dL",
        120.0,
        30.0,
        65.0,
        139.0,
        0,
        35
    ),
    lab!(
        "3C015000002327101",
        "クレアチニン",
        "mg/dL",
        0.85,
        0.25,
        0.46,
        1.07,
        2,
        40
    ),
    lab!(
        "2A030000001930101",
        "ヘモグロビン",
        "g/dL",
        13.5,
        1.6,
        11.6,
        16.8,
        1,
        40
    ),
    lab!(
        "2A010000001930101",
        "白血球数",
        "10^3/uL",
        6.0,
        1.8,
        3.3,
        8.6,
        1,
        40
    ),
    lab!(
        "5C070000002329201",
        "CRP",
        "mg/dL",
        0.3,
        0.8,
        0.0,
        0.14,
        2,
        25
    ),
];

/// Qualitative test: urine protein (JLAC10-shaped), text results.
pub const URINE_PROTEIN: (&str, &str) = ("1A010000000190111", "尿蛋白定性");

/// Drugs: YJ-shaped codes (7 digits, form letter, 4 characters) whose first
/// 3 digits are real therapeutic categories; name, unit, daily dose, days,
/// route.
pub const DRUGS: &[(&str, &str, &str, f64, i32, &str, u32)] = &[
    (
        "2171022F1020",
        "アムロジピン錠5mg",
        "錠",
        1.0,
        28,
        "oral",
        60,
    ),
    (
        "2149039F1028",
        "カンデサルタン錠8mg",
        "錠",
        1.0,
        28,
        "oral",
        40,
    ),
    (
        "3962002F1031",
        "メトホルミン塩酸塩錠250mg",
        "錠",
        4.0,
        28,
        "oral",
        35,
    ),
    (
        "3969010F1024",
        "シタグリプチン錠50mg",
        "錠",
        1.0,
        28,
        "oral",
        30,
    ),
    (
        "2189017F1021",
        "ロスバスタチン錠2.5mg",
        "錠",
        1.0,
        28,
        "oral",
        40,
    ),
    (
        "2325003F2026",
        "ファモチジン錠20mg",
        "錠",
        2.0,
        14,
        "oral",
        20,
    ),
    (
        "2329023F2020",
        "ランソプラゾールOD錠15mg",
        "錠",
        1.0,
        28,
        "oral",
        30,
    ),
    (
        "1149019F1560",
        "ロキソプロフェンNa錠60mg",
        "錠",
        3.0,
        7,
        "oral",
        45,
    ),
    (
        "1141007F1063",
        "アセトアミノフェン錠200mg",
        "錠",
        3.0,
        5,
        "oral",
        35,
    ),
    (
        "1129009F1025",
        "ゾルピデム酒石酸塩錠5mg",
        "錠",
        1.0,
        14,
        "oral",
        15,
    ),
    (
        "2431004F1020",
        "レボチロキシンNa錠50μg",
        "錠",
        1.0,
        28,
        "oral",
        8,
    ),
    (
        "4490023F1027",
        "フェキソフェナジン塩酸塩錠60mg",
        "錠",
        2.0,
        14,
        "oral",
        25,
    ),
    (
        "6131001M1210",
        "アモキシシリンカプセル250mg",
        "カプセル",
        3.0,
        5,
        "oral",
        12,
    ),
    (
        "6149003F1270",
        "クラリスロマイシン錠200mg",
        "錠",
        2.0,
        5,
        "oral",
        10,
    ),
    (
        "3332001F1012",
        "ワルファリンK錠1mg",
        "錠",
        2.0,
        28,
        "oral",
        8,
    ),
    (
        "2139005F1069",
        "フロセミド錠20mg",
        "錠",
        1.0,
        28,
        "oral",
        10,
    ),
    (
        "2354003F1017",
        "センノシド錠12mg",
        "錠",
        2.0,
        14,
        "oral",
        15,
    ),
    (
        "2456001F1310",
        "プレドニゾロン錠5mg",
        "錠",
        2.0,
        7,
        "oral",
        6,
    ),
    (
        "3949003F1020",
        "フェブキソスタット錠20mg",
        "錠",
        1.0,
        28,
        "oral",
        10,
    ),
    (
        "2259707S1026",
        "ツロブテロールテープ2mg",
        "枚",
        1.0,
        14,
        "topical",
        6,
    ),
    (
        "2649735S1079",
        "ロキソプロフェンNaテープ100mg",
        "枚",
        1.0,
        14,
        "topical",
        20,
    ),
    (
        "6250021M1027",
        "オセルタミビルカプセル75mg",
        "カプセル",
        2.0,
        5,
        "oral",
        5,
    ),
    (
        "1319752Q1022",
        "ラタノプロスト点眼液0.005%",
        "mL",
        0.1,
        30,
        "topical",
        8,
    ),
];

/// Vaccines (category 631, YJ-shaped codes), with how many doses a series has.
pub const VACCINES: &[(&str, &str, i32, u32)] = &[
    ("6313400A1028", "インフルエンザHAワクチン", 1, 60),
    ("6311400A1034", "沈降13価肺炎球菌結合型ワクチン", 1, 10),
    (
        "6311401A1021",
        "23価肺炎球菌莢膜ポリサッカライドワクチン",
        1,
        10,
    ),
    (
        "6313402A1025",
        "コロナウイルス修飾ウリジンRNAワクチン",
        3,
        15,
    ),
    ("6313403A1020", "乾燥組換え帯状疱疹ワクチン", 2, 8),
    (
        "6313404A1024",
        "組換え沈降9価ヒトパピローマウイルス様粒子ワクチン",
        3,
        4,
    ),
    ("6313101A1021", "乾燥弱毒生麻しん風しん混合ワクチン", 2, 3),
];

/// Clinical comments without identifiers.
pub const COMMENTS: &[&str] = &[
    "経過良好",
    "次回3ヶ月後再診",
    "服薬コンプライアンス良好",
    "食事指導実施",
    "紹介状あり",
    "症状軽快",
    "採血は空腹時",
    "副作用なし",
    "家族歴あり",
    "禁煙指導",
];

/// Allergens: (system, code, name, category). JFAGY codes from JP Core's
/// code systems (ePrescriptionData package, `JP_JfagyFoodAllergen_CS` and
/// `JP_JfagyNonFoodNonMedicationAllergen_CS`).
pub const ALLERGENS: &[(&str, &str, &str, &str)] = &[
    ("jfagy_food", "J9FB13110000", "鶏卵", "food"),
    ("jfagy_food", "J9FB12110012", "牛乳", "food"),
    ("jfagy_food", "J9FA15000000", "小麦", "food"),
    ("jfagy_food", "J9FA21180000", "落花生", "food"),
    ("jfagy_food", "J9FA19140000", "そば", "food"),
    ("jfagy_food", "J9FA32280000", "くるみ", "food"),
    ("jfagy_other", "J9NK13310000", "スギ", "environment"),
    (
        "jfagy_other",
        "J9NM12110000",
        "ヤケヒョウヒダニ",
        "environment",
    ),
    ("jfagy_other", "J9NJ12150000", "ネコ", "environment"),
    (
        "jfagy_other",
        "J9NP14110000",
        "ラテックス（天然ゴム）",
        "environment",
    ),
    ("yj", "2171022F1020", "アムロジピン錠5mg", "medication"),
];
