//! The code systems and identifier systems the Japanese implementation
//! guides use, each with every URI and OID form found in them (JP Core 1.x
//! aliases, JP-CLINS / 電子カルテ情報共有サービス, 電子処方箋, eCheckupReport and
//! 自治体検診 examples). Sources: schemas/reference/SOURCES.md,
//! "FHIR code systems".

/// ICD-10 (WHO, and MHLW's 2013 Japanese edition).
pub const ICD10: &[&str] = &[
    "http://hl7.org/fhir/sid/icd-10",
    "http://jpfhir.jp/fhir/core/mhlw/CodeSystem/ICD10-2013-full",
];

/// MEDIS 病名交換用コード (4 characters).
pub const MEDIS_EXCHANGE: &[&str] = &[
    "http://medis.or.jp/CodeSystem/master-disease-exCode",
    "urn:oid:1.2.392.200119.4.101.6",
];

/// MEDIS 病名管理番号 (8 digits), the JP-CLINS norm.
pub const MEDIS_NUMBER: &[&str] = &["http://medis.or.jp/CodeSystem/master-disease-keyNumber"];

/// JLAC10 (17 characters), including the eCheckup and JP-CLINS core-lab
/// copies of it.
pub const JLAC10: &[&str] = &[
    "http://medis.or.jp/CodeSystem/master-JLAC10-17digits",
    "urn:oid:1.2.392.200119.4.504",
    "http://jpfhir.jp/fhir/eCheckup/CodeSystem/jlac10",
    "http://jpfhir.jp/fhir/clins/CodeSystem/JLAC10/JP_CLINS_ObsLabResult_CoreLabo_CS",
];

/// The eCheckupReport copy of JLAC10: its items are checkup items.
pub const ECHECKUP_JLAC10: &str = "http://jpfhir.jp/fhir/eCheckup/CodeSystem/jlac10";

/// YJ code (12 characters). JP Core's map lists `…20.1.73` and `…20.2.73`;
/// `…20.2.74` is HOT9, not YJ.
pub const YJ: &[&str] = &[
    "http://capstandard.jp/iyaku.info/CodeSystem/YJ-code",
    "urn:oid:1.2.392.100495.20.1.73",
    "urn:oid:1.2.392.100495.20.2.73",
];

/// MEDIS HOT codes: HOT9, HOT13 (HOT7 names a product family and is not
/// read).
pub const HOT: &[&str] = &[
    "http://medis.or.jp/CodeSystem/master-HOT9",
    "urn:oid:1.2.392.200119.4.403.1",
    "urn:oid:1.2.392.100495.20.2.74",
    "http://medis.or.jp/CodeSystem/master-HOT13",
    "urn:oid:1.2.392.200119.4.402.1",
];

/// 一般名処方マスタ.
pub const GENERIC_NAME: &[&str] = &[
    "http://jpfhir.jp/fhir/core/mhlw/CodeSystem/MedicationGeneralOrderCode",
    "urn:oid:1.2.392.100495.20.1.81",
    "urn:oid:1.2.392.100495.20.2.81",
];

/// Observation categories (HL7's and JP Core's simple one).
pub const OBSERVATION_CATEGORY: &[&str] = &[
    "http://terminology.hl7.org/CodeSystem/observation-category",
    "http://jpfhir.jp/fhir/core/CodeSystem/JP_SimpleObservationCategory_CS",
];

/// Group codes of eCheckupReport / 自治体検診 (an Observation that only
/// gathers its members).
pub const OBSERVATION_GROUP: &[&str] =
    &["http://jpfhir.jp/fhir/eCheckup/CodeSystem/observationGroup-codes"];

/// Identifier systems of a 10-digit medical institution code (医療機関コード).
pub const INSTITUTION: &[&str] = &[
    "http://jpfhir.jp/fhir/core/IdSystem/insurance-medical-institution-no",
    "http://jpfhir.jp/fhir/Common/IdSystem/insurance-medical-institution-no",
    "urn:oid:1.2.392.200119.6.102",
];

/// JP Core's split form: prefecture (2) + fee table (1) + number (7).
pub const ORG_PREFECTURE_EXT: &str =
    "http://jpfhir.jp/fhir/core/Extension/StructureDefinition/JP_Organization_PrefectureNo";
/// Fee table digit of the split form.
pub const ORG_CATEGORY_EXT: &str = "http://jpfhir.jp/fhir/core/Extension/StructureDefinition/JP_Organization_InsuranceOrganizationCategory";
/// 7-digit number of the split form.
pub const ORG_NUMBER_EXT: &str = "http://jpfhir.jp/fhir/core/Extension/StructureDefinition/JP_Organization_InsuranceOrganizationNo";

/// Patient-id namespaces carry the institution: `…20.3.51.1<10 digits>`.
pub const PATIENT_ID_OID: &str = "urn:oid:1.2.392.100495.20.3.51.1";

/// Insurer number (保険者番号) identifier systems.
pub const INSURER: &[&str] = &[
    "urn:oid:1.2.392.100495.20.3.61",
    "http://jpfhir.jp/fhir/core/mhlw/IdSystem/InsurerNumber",
];

/// JP-CLINS insurance member id on Patient: `insurer:symbol:number:branch`.
pub const CLINS_MEMBER_ID: &str = "http://jpfhir.jp/fhir/clins/Idsystem/JP_Insurance_memberID";

/// JP Core Coverage extensions.
pub const COVERAGE_EXT: &str =
    "http://jpfhir.jp/fhir/core/Extension/StructureDefinition/JP_Coverage_";

/// Allergen code systems → contract symbol.
pub const ALLERGEN: &[(&str, &str)] = &[
    (
        "http://jpfhir.jp/fhir/core/CodeSystem/JP_JfagyFoodAllergen_CS",
        "jfagy_food",
    ),
    (
        "http://jpfhir.jp/fhir/core/CodeSystem/JP_JfagyMedicationAllergen_CS",
        "jfagy_medication",
    ),
    (
        "http://jpfhir.jp/fhir/core/CodeSystem/GCM/JP_JfagyMedicationAllergen_CS",
        "jfagy_medication",
    ),
    (
        "http://jpfhir.jp/fhir/core/CodeSystem/JP_JfagyNonFoodNonMedicationAllergen_CS",
        "jfagy_other",
    ),
    ("http://capstandard.jp/iyaku.info/CodeSystem/YJ-code", "yj"),
    ("urn:oid:1.2.392.100495.20.1.73", "yj"),
    ("http://medis.or.jp/CodeSystem/master-HOT9", "hot"),
    ("urn:oid:1.2.392.200119.4.403.1", "hot"),
];

/// JLAC10 codes of the 特定健診 items → checkup fields (transcribed from
/// the MHLW 特定健診 XML code table; several codes per item where the
/// method differs).
pub const CHECKUP_ITEMS: &[(&str, &str)] = &[
    ("9N001000000000001", "height_cm"),
    ("9N006000000000001", "weight_kg"),
    ("9N011000000000001", "bmi"),
    ("9N016160100000001", "waist_cm"),
    ("9N016160200000001", "waist_cm"),
    ("9N016160300000001", "waist_cm"),
    ("9A751000000000001", "systolic_bp"),
    ("9A752000000000001", "systolic_bp"),
    ("9A755000000000001", "systolic_bp"),
    ("9A761000000000001", "diastolic_bp"),
    ("9A762000000000001", "diastolic_bp"),
    ("9A765000000000001", "diastolic_bp"),
    ("3F015000002327101", "triglycerides_mg_dl"),
    ("3F070000002327101", "hdl_mg_dl"),
    ("3F077000002327101", "ldl_mg_dl"),
    ("3B035000002327201", "ast_u_l"),
    ("3B045000002327201", "alt_u_l"),
    ("3B090000002327101", "ggt_u_l"),
    ("3D010000001926101", "fasting_glucose_mg_dl"),
    ("3D046000001906202", "hba1c_percent"),
];

/// The checkup field of a 特定健診 item code.
pub fn checkup_field(jlac10: &str) -> Option<&'static str> {
    CHECKUP_ITEMS
        .iter()
        .find(|(c, _)| *c == jlac10)
        .map(|(_, f)| *f)
}

/// An abnormal flag as HL7 writes it — v2 table 0078 (SS-MIX2 OBX-8) and
/// v3 ObservationInterpretation (JP Core), which share these codes — as
/// the contract's symbol.
pub fn abnormal_flag(code: &str) -> Option<&'static str> {
    match code {
        "H" => Some("high"),
        "L" => Some("low"),
        "N" => Some("normal"),
        "HH" | "HU" => Some("critical_high"),
        "LL" | "LU" => Some("critical_low"),
        "A" | "AA" => Some("abnormal"),
        _ => None,
    }
}
