//! The category names SegVol was trained on: the `labels` of the 25 M3D-Seg
//! datasets, in the M3D-Seg order (codes 0000–0024), as M3D's dataset table
//! lists them (331 entries, 222 distinct names; spellings as the datasets
//! have them, "liver kyst" and "small intestin" included). SegVol publishes
//! no list of its own; its training used the datasets' names as given.
//!
//! The text encoder takes any text, so a name outside this list still runs;
//! the list serves to list what the model knows and to catch typos.

/// One training dataset and its label names.
#[derive(Clone, Copy, Debug)]
pub struct Dataset {
    /// M3D-Seg code, "0000" to "0024".
    pub code: &'static str,
    pub name: &'static str,
    pub labels: &'static [&'static str],
}

/// The 25 datasets, in the M3D-Seg order.
pub const DATASETS: &[Dataset] = &[
    Dataset {
        code: "0000",
        name: "CHAOS",
        labels: &["liver"],
    },
    Dataset {
        code: "0001",
        name: "HaN-Seg",
        labels: &[
            "carotid artery left",
            "carotid artery right",
            "arytenoid",
            "bone mandible",
            "brainstem",
            "buccal mucosa",
            "oral cavity",
            "cochlea left",
            "cochlea right",
            "cricopharyngeal inlet",
            "cervical esophagus",
            "anterior eyeball left",
            "anterior eyeball right",
            "posterior eyeball left",
            "posterior eyeball right",
            "lacrimal gland left",
            "lacrimal gland right",
            "submandibular gland left",
            "submandibular gland right",
            "thyroid",
            "larynx glottis",
            "larynx supraglottic",
            "lips",
            "optic chiasm",
            "optic nerve left",
            "optic nerve right",
            "parotid gland left",
            "parotid gland right",
            "pituitary gland",
            "spinal cord",
        ],
    },
    Dataset {
        code: "0002",
        name: "AMOS22",
        labels: &[
            "spleen",
            "right kidney",
            "left kidney",
            "gall bladder",
            "esophagus",
            "liver",
            "stomach",
            "aorta",
            "postcava",
            "pancreas",
            "right adrenal gland",
            "left adrenal gland",
            "duodenum",
            "bladder",
            "prostate or uterus",
        ],
    },
    Dataset {
        code: "0003",
        name: "AbdomenCT-1k",
        labels: &["liver", "kidney", "spleen", "pancreas"],
    },
    Dataset {
        code: "0004",
        name: "KiTS23",
        labels: &["kidney", "kidney tumor", "kidney cyst"],
    },
    Dataset {
        code: "0005",
        name: "KiPA22",
        labels: &["renal vein", "kidney", "renal artery", "tumor"],
    },
    Dataset {
        code: "0006",
        name: "KiTS19",
        labels: &["kidney", "kidney tumor"],
    },
    Dataset {
        code: "0007",
        name: "BTCV",
        labels: &[
            "spleen",
            "right kidney",
            "left kidney",
            "gallbladder",
            "esophagus",
            "liver",
            "stomach",
            "aorta",
            "inferior vena cava",
            "portal vein and splenic vein",
            "pancreas",
            "right adrenal gland",
            "left adrenal gland",
        ],
    },
    Dataset {
        code: "0008",
        name: "Pancreas-CT",
        labels: &["pancreas"],
    },
    Dataset {
        code: "0009",
        name: "3D-IRCADB",
        labels: &[
            "stones",
            "artery",
            "biliary system",
            "bladder",
            "bone",
            "colon",
            "gallbladder",
            "heart",
            "kidneys",
            "left kidney",
            "left lung",
            "left suprarenal gland",
            "left suprarenal tumor",
            "liver",
            "liver cyst",
            "liver kyst",
            "liver kyste",
            "liver tumor",
            "liver tumor 01",
            "liver tumor 02",
            "liver tumor 03",
            "liver tumor 04",
            "liver tumor 05",
            "liver tumor 06",
            "liver tumor 07",
            "liver tumor 1",
            "liver tumor 2",
            "liver tumors",
            "lungs",
            "metal",
            "metastasectomie",
            "pancreas",
            "portal vein",
            "portal vein 1",
            "right kidney",
            "right lung",
            "right suprarenal gland",
            "right suprarenal tumor",
            "skin",
            "small intestin",
            "spleen",
            "stomach",
            "suprarenal gland",
            "tumor",
            "uterus",
            "vena cava",
            "venous system",
        ],
    },
    Dataset {
        code: "0010",
        name: "FLARE22",
        labels: &[
            "liver",
            "right kidney",
            "spleen",
            "pancreas",
            "aorta",
            "inferior vena cava",
            "right adrenal gland",
            "left adrenal gland",
            "gallbladder",
            "esophagus",
            "stomach",
            "duodenum",
            "left kidney",
        ],
    },
    Dataset {
        code: "0011",
        name: "TotalSegmentator",
        labels: &[
            "adrenal gland left",
            "adrenal gland right",
            "aorta",
            "autochthon left",
            "autochthon right",
            "brain",
            "clavicula left",
            "clavicula right",
            "colon",
            "duodenum",
            "esophagus",
            "face",
            "femur left",
            "femur right",
            "gallbladder",
            "gluteus maximus left",
            "gluteus maximus right",
            "gluteus medius left",
            "gluteus medius right",
            "gluteus minimus left",
            "gluteus minimus right",
            "heart atrium left",
            "heart atrium right",
            "heart myocardium",
            "heart ventricle left",
            "heart ventricle right",
            "hip left",
            "hip right",
            "humerus left",
            "humerus right",
            "iliac artery left",
            "iliac artery right",
            "iliac vena left",
            "iliac vena right",
            "iliopsoas left",
            "iliopsoas right",
            "inferior vena cava",
            "kidney left",
            "kidney right",
            "liver",
            "lung lower lobe left",
            "lung lower lobe right",
            "lung middle lobe right",
            "lung upper lobe left",
            "lung upper lobe right",
            "pancreas",
            "portal vein and splenic vein",
            "pulmonary artery",
            "rib left 1",
            "rib left 2",
            "rib left 3",
            "rib left 4",
            "rib left 5",
            "rib left 6",
            "rib left 7",
            "rib left 8",
            "rib left 9",
            "rib left 10",
            "rib left 11",
            "rib left 12",
            "rib right 1",
            "rib right 2",
            "rib right 3",
            "rib right 4",
            "rib right 5",
            "rib right 6",
            "rib right 7",
            "rib right 8",
            "rib right 9",
            "rib right 10",
            "rib right 11",
            "rib right 12",
            "sacrum",
            "scapula left",
            "scapula right",
            "small bowel",
            "spleen",
            "stomach",
            "trachea",
            "urinary bladder",
            "vertebrae C1",
            "vertebrae C2",
            "vertebrae C3",
            "vertebrae C4",
            "vertebrae C5",
            "vertebrae C6",
            "vertebrae C7",
            "vertebrae T1",
            "vertebrae T2",
            "vertebrae T3",
            "vertebrae T4",
            "vertebrae T5",
            "vertebrae T6",
            "vertebrae T7",
            "vertebrae T8",
            "vertebrae T9",
            "vertebrae T10",
            "vertebrae T11",
            "vertebrae T12",
            "vertebrae L1",
            "vertebrae L2",
            "vertebrae L3",
            "vertebrae L4",
            "vertebrae L5",
        ],
    },
    Dataset {
        code: "0012",
        name: "CT-ORG",
        labels: &["liver", "bladder", "lungs", "kidneys", "bone", "brain"],
    },
    Dataset {
        code: "0013",
        name: "WORD",
        labels: &[
            "liver",
            "spleen",
            "kidney left",
            "kidney right",
            "stomach",
            "gallbladder",
            "esophagus",
            "pancreas",
            "duodenum",
            "colon",
            "intestine",
            "adrenal",
            "rectum",
            "bladder",
            "head of femur left",
            "head of femur right",
        ],
    },
    Dataset {
        code: "0014",
        name: "VerSe19",
        labels: &[
            "cervical spine C1",
            "cervical spine C2",
            "cervical spine C3",
            "cervical spine C4",
            "cervical spine C5",
            "cervical spine C6",
            "cervical spine C7",
            "thoracic spine T1",
            "thoracic spine T2",
            "thoracic spine T3",
            "thoracic spine T4",
            "thoracic spine T5",
            "thoracic spine T6",
            "thoracic spine T7",
            "thoracic spine T8",
            "thoracic spine T9",
            "thoracic spine T10",
            "thoracic spine T11",
            "thoracic spine T12",
            "lumbar spine L1",
            "lumbar spine L1",
            "lumbar spine L3",
            "lumbar spine L4",
            "lumbar spine L5",
            "lumbar spine L6",
            "sacrum",
            "coccygis",
            "additional 13th thoracic vertebra, T13",
        ],
    },
    Dataset {
        code: "0015",
        name: "VerSe20",
        labels: &[
            "cervical spine C1",
            "cervical spine C2",
            "cervical spine C3",
            "cervical spine C4",
            "cervical spine C5",
            "cervical spine C6",
            "cervical spine C7",
            "thoracic spine T1",
            "thoracic spine T2",
            "thoracic spine T3",
            "thoracic spine T4",
            "thoracic spine T5",
            "thoracic spine T6",
            "thoracic spine T7",
            "thoracic spine T8",
            "thoracic spine T9",
            "thoracic spine T10",
            "thoracic spine T11",
            "thoracic spine T12",
            "lumbar spine L1",
            "lumbar spine L1",
            "lumbar spine L3",
            "lumbar spine L4",
            "lumbar spine L5",
            "lumbar spine L6",
            "sacrum",
            "coccygis",
            "additional 13th thoracic vertebra T13",
        ],
    },
    Dataset {
        code: "0016",
        name: "SLIVER07",
        labels: &["liver"],
    },
    Dataset {
        code: "0017",
        name: "QUBIQ",
        labels: &["kidney", "pancreas", "pancreatic lesion"],
    },
    Dataset {
        code: "0018",
        name: "MSD-Colon",
        labels: &["colon cancer"],
    },
    Dataset {
        code: "0019",
        name: "MSD-HepaticVessel",
        labels: &["hepatic vessels", "tumour"],
    },
    Dataset {
        code: "0020",
        name: "MSD-Liver",
        labels: &["liver", "tumour"],
    },
    Dataset {
        code: "0021",
        name: "MSD-Lung",
        labels: &["lung tumours"],
    },
    Dataset {
        code: "0022",
        name: "MSD-Pancreas",
        labels: &["pancreas", "tumour"],
    },
    Dataset {
        code: "0023",
        name: "MSD-Spleen",
        labels: &["spleen"],
    },
    Dataset {
        code: "0024",
        name: "LUNA16",
        labels: &["left lung", "right lung", "trachea"],
    },
];

/// A name as the tokenizer sees it: lower case, single spaces.
fn normalise(name: &str) -> String {
    name.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// The distinct names, in the order they first appear in [`DATASETS`].
pub fn categories() -> Vec<&'static str> {
    let mut seen = std::collections::HashSet::new();
    DATASETS
        .iter()
        .flat_map(|d| d.labels.iter().copied())
        .filter(|n| seen.insert(normalise(n)))
        .collect()
}

/// Whether `name` is a training name (ignoring case and spacing).
pub fn is_known(name: &str) -> bool {
    let n = normalise(name);
    DATASETS
        .iter()
        .any(|d| d.labels.iter().any(|l| normalise(l) == n))
}

/// The datasets whose labels include `name` (ignoring case and spacing).
pub fn datasets_of(name: &str) -> Vec<&'static Dataset> {
    let n = normalise(name);
    DATASETS
        .iter()
        .filter(|d| d.labels.iter().any(|l| normalise(l) == n))
        .collect()
}

/// Up to `k` training names closest to `name` by normalised edit distance
/// (Damerau–Levenshtein: a transposed pair is one edit), closest first.
pub fn nearest(name: &str, k: usize) -> Vec<&'static str> {
    let n = normalise(name);
    let mut scored: Vec<(f64, &'static str)> = categories()
        .into_iter()
        .map(|c| (strsim::normalized_damerau_levenshtein(&n, &normalise(c)), c))
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(b.1)));
    scored.into_iter().take(k).map(|(_, c)| c).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The list's known counts: 25 datasets, 331 entries,
    /// 222 distinct names, TotalSegmentator's 104.
    #[test]
    fn the_list_has_the_documented_counts() {
        assert_eq!(DATASETS.len(), 25);
        assert_eq!(DATASETS.iter().map(|d| d.labels.len()).sum::<usize>(), 331);
        assert_eq!(categories().len(), 222);
        let ts = DATASETS
            .iter()
            .find(|d| d.name == "TotalSegmentator")
            .unwrap();
        assert_eq!(ts.labels.len(), 104);
        assert!(DATASETS
            .iter()
            .enumerate()
            .all(|(i, d)| d.code == format!("{i:04}")));
    }

    #[test]
    fn lookups_ignore_case_and_spacing() {
        assert!(is_known("Liver"));
        assert!(is_known("  inferior   vena cava "));
        assert!(!is_known("liverr"));
        let names: Vec<_> = datasets_of("liver").iter().map(|d| d.name).collect();
        assert!(names.contains(&"CHAOS") && names.contains(&"MSD-Liver"));
    }

    #[test]
    fn typos_find_the_intended_name() {
        assert_eq!(nearest("liverr", 1), ["liver"]);
        assert_eq!(nearest("kindey", 1), ["kidney"]);
        assert_eq!(nearest("Spleeen", 1), ["spleen"]);
        assert_eq!(nearest("pancreas tumour", 3).len(), 3);
    }
}
