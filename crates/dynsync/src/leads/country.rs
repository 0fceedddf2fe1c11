//! Countries from free text. Partner Center's `Country` is what the customer typed ("USA", "United Kingdom", "FR",
//! "Deutschland"), not a code; a Dynamics admin expects one spelling per country in `address1_country`, and an
//! ISO 3166-1 alpha-2 code to filter on. Text that names no known country is kept as given, never dropped.

use serde::Serialize;
use std::collections::HashMap;
use std::sync::LazyLock;

/// A country: the English short name and, when the text was recognised, its ISO 3166-1 alpha-2 code.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Country {
    /// The short name ("United States"), or the text as given (trimmed) when it names no known country.
    pub name: String,
    /// `US`, `GB`, …; `None` when the text names no known country.
    pub iso2: Option<String>,
}

impl Country {
    /// Reads free text: a name, a common alias or a native name (USA, UK, Great Britain, Deutschland), an alpha-2
    /// or alpha-3 code, in any case and with or without accents. `None` only for blank text.
    pub fn from_text(text: &str) -> Option<Country> {
        let text = text.trim();
        if text.is_empty() {
            return None;
        }
        Some(match lookup(text) {
            Some(&(iso2, _, name)) => Country { name: name.to_owned(), iso2: Some(iso2.to_owned()) },
            None => Country { name: text.to_owned(), iso2: None },
        })
    }

    /// The country of an alpha-2 code, in any case.
    pub fn from_iso2(code: &str) -> Option<Country> {
        let code = code.trim().to_ascii_uppercase();
        COUNTRIES
            .iter()
            .find(|(iso2, _, _)| *iso2 == code)
            .map(|&(iso2, _, name)| Country { name: name.to_owned(), iso2: Some(iso2.to_owned()) })
    }

    /// Whether the text was recognised as an ISO country.
    pub fn is_known(&self) -> bool {
        self.iso2.is_some()
    }
}

/// The table row of a text: codes first (two letters are alpha-2, three alpha-3), then names and aliases.
fn lookup(text: &str) -> Option<&'static (&'static str, &'static str, &'static str)> {
    let key = fold(text);
    let code = key.to_ascii_uppercase();
    let by_code = match code.len() {
        2 => COUNTRIES.iter().position(|(iso2, _, _)| *iso2 == code),
        3 => COUNTRIES.iter().position(|(_, iso3, _)| *iso3 == code),
        _ => None,
    };
    by_code.or_else(|| BY_NAME.get(&key).copied()).map(|i| &COUNTRIES[i])
}

/// Every folded name and alias → its row in [`COUNTRIES`].
static BY_NAME: LazyLock<HashMap<String, usize>> = LazyLock::new(|| {
    let row = |iso2: &str| COUNTRIES.iter().position(|(code, _, _)| *code == iso2);
    let names = COUNTRIES.iter().map(|&(iso2, _, name)| (name, iso2));
    let aliases = ISO_ALIASES.iter().chain(COMMON_ALIASES.iter()).copied();
    names.chain(aliases).filter_map(|(name, iso2)| Some((fold(name), row(iso2)?))).collect()
});

/// Folds text for comparing: lower case, accents off ("Österreich" → "osterreich"), dots and apostrophes
/// dropped ("U.S.A." → "usa"), other punctuation a space, "&" → "and", "st" → "saint", no leading "the".
fn fold(text: &str) -> String {
    let mut folded = String::with_capacity(text.len());
    for c in text.chars().flat_map(char::to_lowercase) {
        match c {
            '.' | '\'' | '’' | '`' | '´' => {}
            '&' => folded.push_str(" and "),
            c if c.is_ascii_alphanumeric() => folded.push(c),
            c if c.is_alphanumeric() => match unaccent(c) {
                Some(plain) => folded.push_str(plain),
                None => folded.push(c),
            },
            _ => folded.push(' '),
        }
    }
    let words: Vec<&str> = folded.split_whitespace().map(|w| if w == "st" { "saint" } else { w }).collect();
    let words = match words.as_slice() {
        ["the", rest @ ..] if !rest.is_empty() => rest,
        all => all,
    };
    words.join(" ")
}

/// The plain letters of an accented Latin letter; `None` for any other letter.
fn unaccent(c: char) -> Option<&'static str> {
    const FOLDS: [(&str, &str); 25] = [
        ("àáâãäåāăą", "a"),
        ("æ", "ae"),
        ("çćĉċč", "c"),
        ("ďđð", "d"),
        ("èéêëēĕėęě", "e"),
        ("ĝğġģ", "g"),
        ("ĥħ", "h"),
        ("ìíîïĩīĭįı", "i"),
        ("ĵ", "j"),
        ("ķ", "k"),
        ("ĺļľŀł", "l"),
        ("ñńņňŉ", "n"),
        ("òóôõöøōŏő", "o"),
        ("œ", "oe"),
        ("ŕŗř", "r"),
        ("śŝşšș", "s"),
        ("ß", "ss"),
        ("ţťŧț", "t"),
        ("þ", "th"),
        ("ùúûüũūŭůűų", "u"),
        ("ŵ", "w"),
        ("ýÿŷ", "y"),
        ("źżž", "z"),
        ("ǎ", "a"),
        ("ǐ", "i"),
    ];
    FOLDS.iter().find(|(letters, _)| letters.contains(c)).map(|&(_, plain)| plain)
}

/// Names people write that are neither the short name nor an ISO name: abbreviations, former names, parts of a
/// country, native names. Each is checked not to collide with another country's (see the tests).
const COMMON_ALIASES: [(&str, &str); 121] = [
    ("USA", "US"),
    ("U.S.", "US"),
    ("U.S.A.", "US"),
    ("America", "US"),
    ("Estados Unidos", "US"),
    ("États-Unis", "US"),
    ("Vereinigte Staaten", "US"),
    ("Stati Uniti", "US"),
    ("UK", "GB"),
    ("U.K.", "GB"),
    ("Great Britain", "GB"),
    ("Britain", "GB"),
    ("England", "GB"),
    ("Scotland", "GB"),
    ("Wales", "GB"),
    ("Northern Ireland", "GB"),
    ("Royaume-Uni", "GB"),
    ("Vereinigtes Königreich", "GB"),
    ("Reino Unido", "GB"),
    ("Regno Unito", "GB"),
    ("Deutschland", "DE"),
    ("Allemagne", "DE"),
    ("Alemania", "DE"),
    ("Germania", "DE"),
    ("Frankreich", "FR"),
    ("Francia", "FR"),
    ("Holland", "NL"),
    ("Nederland", "NL"),
    ("Pays-Bas", "NL"),
    ("Niederlande", "NL"),
    ("Países Bajos", "NL"),
    ("Belgique", "BE"),
    ("België", "BE"),
    ("Belgien", "BE"),
    ("Schweiz", "CH"),
    ("Suisse", "CH"),
    ("Svizzera", "CH"),
    ("Suiza", "CH"),
    ("Österreich", "AT"),
    ("Autriche", "AT"),
    ("España", "ES"),
    ("Espagne", "ES"),
    ("Spanien", "ES"),
    ("Italia", "IT"),
    ("Italie", "IT"),
    ("Italien", "IT"),
    ("Sverige", "SE"),
    ("Suède", "SE"),
    ("Schweden", "SE"),
    ("Norge", "NO"),
    ("Danmark", "DK"),
    ("Dänemark", "DK"),
    ("Suomi", "FI"),
    ("Polska", "PL"),
    ("Polen", "PL"),
    ("Pologne", "PL"),
    ("Česko", "CZ"),
    ("Česká republika", "CZ"),
    ("Tschechien", "CZ"),
    ("Slovensko", "SK"),
    ("Magyarország", "HU"),
    ("Hellas", "GR"),
    ("Ellada", "GR"),
    ("Griechenland", "GR"),
    ("Grèce", "GR"),
    ("Éire", "IE"),
    ("Republic of Ireland", "IE"),
    ("Irlande", "IE"),
    ("Irland", "IE"),
    ("Rossiya", "RU"),
    ("Türkei", "TR"),
    ("Turkey", "TR"),
    ("Turquie", "TR"),
    ("Macedonia", "MK"),
    ("FYROM", "MK"),
    ("Bosnia", "BA"),
    ("Vatican", "VA"),
    ("Vatican City", "VA"),
    ("Moldavia", "MD"),
    ("Byelorussia", "BY"),
    ("Luxemburg", "LU"),
    ("Brasil", "BR"),
    ("Brésil", "BR"),
    ("Kanada", "CA"),
    ("Mexique", "MX"),
    ("Trinidad", "TT"),
    ("PRC", "CN"),
    ("Mainland China", "CN"),
    ("Chine", "CN"),
    ("Republic of China", "TW"),
    ("Korea", "KR"),
    ("Republic of Korea", "KR"),
    ("Korea, South", "KR"),
    ("ROK", "KR"),
    ("DPRK", "KP"),
    ("Korea, North", "KP"),
    ("Burma", "MM"),
    ("East Timor", "TL"),
    ("Macau", "MO"),
    ("Hong Kong SAR", "HK"),
    ("UAE", "AE"),
    ("Emirates", "AE"),
    ("KSA", "SA"),
    ("Persia", "IR"),
    ("Ivory Coast", "CI"),
    ("Cape Verde", "CV"),
    ("Swaziland", "SZ"),
    ("DRC", "CD"),
    ("DR Congo", "CD"),
    ("Congo-Kinshasa", "CD"),
    ("Zaire", "CD"),
    ("Congo-Brazzaville", "CG"),
    ("Japon", "JP"),
    ("Inde", "IN"),
    ("Indien", "IN"),
    ("Australie", "AU"),
    ("Australien", "AU"),
    ("Aotearoa", "NZ"),
    ("Falklands", "FK"),
    ("Malvinas", "FK"),
    ("US Virgin Islands", "VI"),
];

/// ISO 3166-1: alpha-2, alpha-3 and the English short name as people write it (the ISO short name without its
/// article and formal parts: "Bolivia", not "Bolivia, Plurinational State of"). From Debian iso-codes.
pub const COUNTRIES: [(&str, &str, &str); 249] = [
    ("AD", "AND", "Andorra"),
    ("AE", "ARE", "United Arab Emirates"),
    ("AF", "AFG", "Afghanistan"),
    ("AG", "ATG", "Antigua and Barbuda"),
    ("AI", "AIA", "Anguilla"),
    ("AL", "ALB", "Albania"),
    ("AM", "ARM", "Armenia"),
    ("AO", "AGO", "Angola"),
    ("AQ", "ATA", "Antarctica"),
    ("AR", "ARG", "Argentina"),
    ("AS", "ASM", "American Samoa"),
    ("AT", "AUT", "Austria"),
    ("AU", "AUS", "Australia"),
    ("AW", "ABW", "Aruba"),
    ("AX", "ALA", "Åland Islands"),
    ("AZ", "AZE", "Azerbaijan"),
    ("BA", "BIH", "Bosnia and Herzegovina"),
    ("BB", "BRB", "Barbados"),
    ("BD", "BGD", "Bangladesh"),
    ("BE", "BEL", "Belgium"),
    ("BF", "BFA", "Burkina Faso"),
    ("BG", "BGR", "Bulgaria"),
    ("BH", "BHR", "Bahrain"),
    ("BI", "BDI", "Burundi"),
    ("BJ", "BEN", "Benin"),
    ("BL", "BLM", "Saint Barthélemy"),
    ("BM", "BMU", "Bermuda"),
    ("BN", "BRN", "Brunei"),
    ("BO", "BOL", "Bolivia"),
    ("BQ", "BES", "Bonaire, Sint Eustatius and Saba"),
    ("BR", "BRA", "Brazil"),
    ("BS", "BHS", "Bahamas"),
    ("BT", "BTN", "Bhutan"),
    ("BV", "BVT", "Bouvet Island"),
    ("BW", "BWA", "Botswana"),
    ("BY", "BLR", "Belarus"),
    ("BZ", "BLZ", "Belize"),
    ("CA", "CAN", "Canada"),
    ("CC", "CCK", "Cocos (Keeling) Islands"),
    ("CD", "COD", "Democratic Republic of the Congo"),
    ("CF", "CAF", "Central African Republic"),
    ("CG", "COG", "Congo"),
    ("CH", "CHE", "Switzerland"),
    ("CI", "CIV", "Côte d'Ivoire"),
    ("CK", "COK", "Cook Islands"),
    ("CL", "CHL", "Chile"),
    ("CM", "CMR", "Cameroon"),
    ("CN", "CHN", "China"),
    ("CO", "COL", "Colombia"),
    ("CR", "CRI", "Costa Rica"),
    ("CU", "CUB", "Cuba"),
    ("CV", "CPV", "Cabo Verde"),
    ("CW", "CUW", "Curaçao"),
    ("CX", "CXR", "Christmas Island"),
    ("CY", "CYP", "Cyprus"),
    ("CZ", "CZE", "Czechia"),
    ("DE", "DEU", "Germany"),
    ("DJ", "DJI", "Djibouti"),
    ("DK", "DNK", "Denmark"),
    ("DM", "DMA", "Dominica"),
    ("DO", "DOM", "Dominican Republic"),
    ("DZ", "DZA", "Algeria"),
    ("EC", "ECU", "Ecuador"),
    ("EE", "EST", "Estonia"),
    ("EG", "EGY", "Egypt"),
    ("EH", "ESH", "Western Sahara"),
    ("ER", "ERI", "Eritrea"),
    ("ES", "ESP", "Spain"),
    ("ET", "ETH", "Ethiopia"),
    ("FI", "FIN", "Finland"),
    ("FJ", "FJI", "Fiji"),
    ("FK", "FLK", "Falkland Islands"),
    ("FM", "FSM", "Micronesia"),
    ("FO", "FRO", "Faroe Islands"),
    ("FR", "FRA", "France"),
    ("GA", "GAB", "Gabon"),
    ("GB", "GBR", "United Kingdom"),
    ("GD", "GRD", "Grenada"),
    ("GE", "GEO", "Georgia"),
    ("GF", "GUF", "French Guiana"),
    ("GG", "GGY", "Guernsey"),
    ("GH", "GHA", "Ghana"),
    ("GI", "GIB", "Gibraltar"),
    ("GL", "GRL", "Greenland"),
    ("GM", "GMB", "Gambia"),
    ("GN", "GIN", "Guinea"),
    ("GP", "GLP", "Guadeloupe"),
    ("GQ", "GNQ", "Equatorial Guinea"),
    ("GR", "GRC", "Greece"),
    ("GS", "SGS", "South Georgia and the South Sandwich Islands"),
    ("GT", "GTM", "Guatemala"),
    ("GU", "GUM", "Guam"),
    ("GW", "GNB", "Guinea-Bissau"),
    ("GY", "GUY", "Guyana"),
    ("HK", "HKG", "Hong Kong"),
    ("HM", "HMD", "Heard Island and McDonald Islands"),
    ("HN", "HND", "Honduras"),
    ("HR", "HRV", "Croatia"),
    ("HT", "HTI", "Haiti"),
    ("HU", "HUN", "Hungary"),
    ("ID", "IDN", "Indonesia"),
    ("IE", "IRL", "Ireland"),
    ("IL", "ISR", "Israel"),
    ("IM", "IMN", "Isle of Man"),
    ("IN", "IND", "India"),
    ("IO", "IOT", "British Indian Ocean Territory"),
    ("IQ", "IRQ", "Iraq"),
    ("IR", "IRN", "Iran"),
    ("IS", "ISL", "Iceland"),
    ("IT", "ITA", "Italy"),
    ("JE", "JEY", "Jersey"),
    ("JM", "JAM", "Jamaica"),
    ("JO", "JOR", "Jordan"),
    ("JP", "JPN", "Japan"),
    ("KE", "KEN", "Kenya"),
    ("KG", "KGZ", "Kyrgyzstan"),
    ("KH", "KHM", "Cambodia"),
    ("KI", "KIR", "Kiribati"),
    ("KM", "COM", "Comoros"),
    ("KN", "KNA", "Saint Kitts and Nevis"),
    ("KP", "PRK", "North Korea"),
    ("KR", "KOR", "South Korea"),
    ("KW", "KWT", "Kuwait"),
    ("KY", "CYM", "Cayman Islands"),
    ("KZ", "KAZ", "Kazakhstan"),
    ("LA", "LAO", "Laos"),
    ("LB", "LBN", "Lebanon"),
    ("LC", "LCA", "Saint Lucia"),
    ("LI", "LIE", "Liechtenstein"),
    ("LK", "LKA", "Sri Lanka"),
    ("LR", "LBR", "Liberia"),
    ("LS", "LSO", "Lesotho"),
    ("LT", "LTU", "Lithuania"),
    ("LU", "LUX", "Luxembourg"),
    ("LV", "LVA", "Latvia"),
    ("LY", "LBY", "Libya"),
    ("MA", "MAR", "Morocco"),
    ("MC", "MCO", "Monaco"),
    ("MD", "MDA", "Moldova"),
    ("ME", "MNE", "Montenegro"),
    ("MF", "MAF", "Saint Martin"),
    ("MG", "MDG", "Madagascar"),
    ("MH", "MHL", "Marshall Islands"),
    ("MK", "MKD", "North Macedonia"),
    ("ML", "MLI", "Mali"),
    ("MM", "MMR", "Myanmar"),
    ("MN", "MNG", "Mongolia"),
    ("MO", "MAC", "Macao"),
    ("MP", "MNP", "Northern Mariana Islands"),
    ("MQ", "MTQ", "Martinique"),
    ("MR", "MRT", "Mauritania"),
    ("MS", "MSR", "Montserrat"),
    ("MT", "MLT", "Malta"),
    ("MU", "MUS", "Mauritius"),
    ("MV", "MDV", "Maldives"),
    ("MW", "MWI", "Malawi"),
    ("MX", "MEX", "Mexico"),
    ("MY", "MYS", "Malaysia"),
    ("MZ", "MOZ", "Mozambique"),
    ("NA", "NAM", "Namibia"),
    ("NC", "NCL", "New Caledonia"),
    ("NE", "NER", "Niger"),
    ("NF", "NFK", "Norfolk Island"),
    ("NG", "NGA", "Nigeria"),
    ("NI", "NIC", "Nicaragua"),
    ("NL", "NLD", "Netherlands"),
    ("NO", "NOR", "Norway"),
    ("NP", "NPL", "Nepal"),
    ("NR", "NRU", "Nauru"),
    ("NU", "NIU", "Niue"),
    ("NZ", "NZL", "New Zealand"),
    ("OM", "OMN", "Oman"),
    ("PA", "PAN", "Panama"),
    ("PE", "PER", "Peru"),
    ("PF", "PYF", "French Polynesia"),
    ("PG", "PNG", "Papua New Guinea"),
    ("PH", "PHL", "Philippines"),
    ("PK", "PAK", "Pakistan"),
    ("PL", "POL", "Poland"),
    ("PM", "SPM", "Saint Pierre and Miquelon"),
    ("PN", "PCN", "Pitcairn"),
    ("PR", "PRI", "Puerto Rico"),
    ("PS", "PSE", "Palestine"),
    ("PT", "PRT", "Portugal"),
    ("PW", "PLW", "Palau"),
    ("PY", "PRY", "Paraguay"),
    ("QA", "QAT", "Qatar"),
    ("RE", "REU", "Réunion"),
    ("RO", "ROU", "Romania"),
    ("RS", "SRB", "Serbia"),
    ("RU", "RUS", "Russia"),
    ("RW", "RWA", "Rwanda"),
    ("SA", "SAU", "Saudi Arabia"),
    ("SB", "SLB", "Solomon Islands"),
    ("SC", "SYC", "Seychelles"),
    ("SD", "SDN", "Sudan"),
    ("SE", "SWE", "Sweden"),
    ("SG", "SGP", "Singapore"),
    ("SH", "SHN", "Saint Helena, Ascension and Tristan da Cunha"),
    ("SI", "SVN", "Slovenia"),
    ("SJ", "SJM", "Svalbard and Jan Mayen"),
    ("SK", "SVK", "Slovakia"),
    ("SL", "SLE", "Sierra Leone"),
    ("SM", "SMR", "San Marino"),
    ("SN", "SEN", "Senegal"),
    ("SO", "SOM", "Somalia"),
    ("SR", "SUR", "Suriname"),
    ("SS", "SSD", "South Sudan"),
    ("ST", "STP", "Sao Tome and Principe"),
    ("SV", "SLV", "El Salvador"),
    ("SX", "SXM", "Sint Maarten"),
    ("SY", "SYR", "Syria"),
    ("SZ", "SWZ", "Eswatini"),
    ("TC", "TCA", "Turks and Caicos Islands"),
    ("TD", "TCD", "Chad"),
    ("TF", "ATF", "French Southern Territories"),
    ("TG", "TGO", "Togo"),
    ("TH", "THA", "Thailand"),
    ("TJ", "TJK", "Tajikistan"),
    ("TK", "TKL", "Tokelau"),
    ("TL", "TLS", "Timor-Leste"),
    ("TM", "TKM", "Turkmenistan"),
    ("TN", "TUN", "Tunisia"),
    ("TO", "TON", "Tonga"),
    ("TR", "TUR", "Türkiye"),
    ("TT", "TTO", "Trinidad and Tobago"),
    ("TV", "TUV", "Tuvalu"),
    ("TW", "TWN", "Taiwan"),
    ("TZ", "TZA", "Tanzania"),
    ("UA", "UKR", "Ukraine"),
    ("UG", "UGA", "Uganda"),
    ("UM", "UMI", "United States Minor Outlying Islands"),
    ("US", "USA", "United States"),
    ("UY", "URY", "Uruguay"),
    ("UZ", "UZB", "Uzbekistan"),
    ("VA", "VAT", "Holy See"),
    ("VC", "VCT", "Saint Vincent and the Grenadines"),
    ("VE", "VEN", "Venezuela"),
    ("VG", "VGB", "British Virgin Islands"),
    ("VI", "VIR", "U.S. Virgin Islands"),
    ("VN", "VNM", "Vietnam"),
    ("VU", "VUT", "Vanuatu"),
    ("WF", "WLF", "Wallis and Futuna"),
    ("WS", "WSM", "Samoa"),
    ("YE", "YEM", "Yemen"),
    ("YT", "MYT", "Mayotte"),
    ("ZA", "ZAF", "South Africa"),
    ("ZM", "ZMB", "Zambia"),
    ("ZW", "ZWE", "Zimbabwe"),
];

/// The ISO names and official names that differ from the short name in [`COUNTRIES`].
const ISO_ALIASES: [(&str, &str); 186] = [
    ("Principality of Andorra", "AD"),
    ("Islamic Republic of Afghanistan", "AF"),
    ("Republic of Albania", "AL"),
    ("Republic of Armenia", "AM"),
    ("Republic of Angola", "AO"),
    ("Argentine Republic", "AR"),
    ("Republic of Austria", "AT"),
    ("Republic of Azerbaijan", "AZ"),
    ("Republic of Bosnia and Herzegovina", "BA"),
    ("People's Republic of Bangladesh", "BD"),
    ("Kingdom of Belgium", "BE"),
    ("Republic of Bulgaria", "BG"),
    ("Kingdom of Bahrain", "BH"),
    ("Republic of Burundi", "BI"),
    ("Republic of Benin", "BJ"),
    ("Brunei Darussalam", "BN"),
    ("Bolivia, Plurinational State of", "BO"),
    ("Plurinational State of Bolivia", "BO"),
    ("Federative Republic of Brazil", "BR"),
    ("Commonwealth of the Bahamas", "BS"),
    ("Kingdom of Bhutan", "BT"),
    ("Republic of Botswana", "BW"),
    ("Republic of Belarus", "BY"),
    ("Congo, The Democratic Republic of the", "CD"),
    ("Republic of the Congo", "CG"),
    ("Swiss Confederation", "CH"),
    ("Republic of Côte d'Ivoire", "CI"),
    ("Republic of Chile", "CL"),
    ("Republic of Cameroon", "CM"),
    ("People's Republic of China", "CN"),
    ("Republic of Colombia", "CO"),
    ("Republic of Costa Rica", "CR"),
    ("Republic of Cuba", "CU"),
    ("Republic of Cabo Verde", "CV"),
    ("Republic of Cyprus", "CY"),
    ("Czech Republic", "CZ"),
    ("Federal Republic of Germany", "DE"),
    ("Republic of Djibouti", "DJ"),
    ("Kingdom of Denmark", "DK"),
    ("Commonwealth of Dominica", "DM"),
    ("People's Democratic Republic of Algeria", "DZ"),
    ("Republic of Ecuador", "EC"),
    ("Republic of Estonia", "EE"),
    ("Arab Republic of Egypt", "EG"),
    ("the State of Eritrea", "ER"),
    ("Kingdom of Spain", "ES"),
    ("Federal Democratic Republic of Ethiopia", "ET"),
    ("Republic of Finland", "FI"),
    ("Republic of Fiji", "FJ"),
    ("Falkland Islands (Malvinas)", "FK"),
    ("Micronesia, Federated States of", "FM"),
    ("Federated States of Micronesia", "FM"),
    ("French Republic", "FR"),
    ("Gabonese Republic", "GA"),
    ("United Kingdom of Great Britain and Northern Ireland", "GB"),
    ("Republic of Ghana", "GH"),
    ("Republic of the Gambia", "GM"),
    ("Republic of Guinea", "GN"),
    ("Republic of Equatorial Guinea", "GQ"),
    ("Hellenic Republic", "GR"),
    ("Republic of Guatemala", "GT"),
    ("Republic of Guinea-Bissau", "GW"),
    ("Republic of Guyana", "GY"),
    ("Hong Kong Special Administrative Region of China", "HK"),
    ("Republic of Honduras", "HN"),
    ("Republic of Croatia", "HR"),
    ("Republic of Haiti", "HT"),
    ("Republic of Indonesia", "ID"),
    ("State of Israel", "IL"),
    ("Republic of India", "IN"),
    ("Republic of Iraq", "IQ"),
    ("Iran, Islamic Republic of", "IR"),
    ("Islamic Republic of Iran", "IR"),
    ("Republic of Iceland", "IS"),
    ("Italian Republic", "IT"),
    ("Hashemite Kingdom of Jordan", "JO"),
    ("Republic of Kenya", "KE"),
    ("Kyrgyz Republic", "KG"),
    ("Kingdom of Cambodia", "KH"),
    ("Republic of Kiribati", "KI"),
    ("Union of the Comoros", "KM"),
    ("Korea, Democratic People's Republic of", "KP"),
    ("Democratic People's Republic of Korea", "KP"),
    ("Korea, Republic of", "KR"),
    ("State of Kuwait", "KW"),
    ("Republic of Kazakhstan", "KZ"),
    ("Lao People's Democratic Republic", "LA"),
    ("Lebanese Republic", "LB"),
    ("Principality of Liechtenstein", "LI"),
    ("Democratic Socialist Republic of Sri Lanka", "LK"),
    ("Republic of Liberia", "LR"),
    ("Kingdom of Lesotho", "LS"),
    ("Republic of Lithuania", "LT"),
    ("Grand Duchy of Luxembourg", "LU"),
    ("Republic of Latvia", "LV"),
    ("Kingdom of Morocco", "MA"),
    ("Principality of Monaco", "MC"),
    ("Moldova, Republic of", "MD"),
    ("Republic of Moldova", "MD"),
    ("Saint Martin (French part)", "MF"),
    ("Republic of Madagascar", "MG"),
    ("Republic of the Marshall Islands", "MH"),
    ("Republic of North Macedonia", "MK"),
    ("Republic of Mali", "ML"),
    ("Republic of Myanmar", "MM"),
    ("Macao Special Administrative Region of China", "MO"),
    ("Commonwealth of the Northern Mariana Islands", "MP"),
    ("Islamic Republic of Mauritania", "MR"),
    ("Republic of Malta", "MT"),
    ("Republic of Mauritius", "MU"),
    ("Republic of Maldives", "MV"),
    ("Republic of Malawi", "MW"),
    ("United Mexican States", "MX"),
    ("Republic of Mozambique", "MZ"),
    ("Republic of Namibia", "NA"),
    ("Republic of the Niger", "NE"),
    ("Federal Republic of Nigeria", "NG"),
    ("Republic of Nicaragua", "NI"),
    ("Kingdom of the Netherlands", "NL"),
    ("Kingdom of Norway", "NO"),
    ("Federal Democratic Republic of Nepal", "NP"),
    ("Republic of Nauru", "NR"),
    ("Sultanate of Oman", "OM"),
    ("Republic of Panama", "PA"),
    ("Republic of Peru", "PE"),
    ("Independent State of Papua New Guinea", "PG"),
    ("Republic of the Philippines", "PH"),
    ("Islamic Republic of Pakistan", "PK"),
    ("Republic of Poland", "PL"),
    ("Palestine, State of", "PS"),
    ("the State of Palestine", "PS"),
    ("Portuguese Republic", "PT"),
    ("Republic of Palau", "PW"),
    ("Republic of Paraguay", "PY"),
    ("State of Qatar", "QA"),
    ("Republic of Serbia", "RS"),
    ("Russian Federation", "RU"),
    ("Rwandese Republic", "RW"),
    ("Kingdom of Saudi Arabia", "SA"),
    ("Republic of Seychelles", "SC"),
    ("Republic of the Sudan", "SD"),
    ("Kingdom of Sweden", "SE"),
    ("Republic of Singapore", "SG"),
    ("Republic of Slovenia", "SI"),
    ("Slovak Republic", "SK"),
    ("Republic of Sierra Leone", "SL"),
    ("Republic of San Marino", "SM"),
    ("Republic of Senegal", "SN"),
    ("Federal Republic of Somalia", "SO"),
    ("Republic of Suriname", "SR"),
    ("Republic of South Sudan", "SS"),
    ("Democratic Republic of Sao Tome and Principe", "ST"),
    ("Republic of El Salvador", "SV"),
    ("Sint Maarten (Dutch part)", "SX"),
    ("Syrian Arab Republic", "SY"),
    ("Kingdom of Eswatini", "SZ"),
    ("Republic of Chad", "TD"),
    ("Togolese Republic", "TG"),
    ("Kingdom of Thailand", "TH"),
    ("Republic of Tajikistan", "TJ"),
    ("Democratic Republic of Timor-Leste", "TL"),
    ("Republic of Tunisia", "TN"),
    ("Kingdom of Tonga", "TO"),
    ("Republic of Türkiye", "TR"),
    ("Republic of Trinidad and Tobago", "TT"),
    ("Taiwan, Province of China", "TW"),
    ("Tanzania, United Republic of", "TZ"),
    ("United Republic of Tanzania", "TZ"),
    ("Republic of Uganda", "UG"),
    ("United States of America", "US"),
    ("Eastern Republic of Uruguay", "UY"),
    ("Republic of Uzbekistan", "UZ"),
    ("Holy See (Vatican City State)", "VA"),
    ("Venezuela, Bolivarian Republic of", "VE"),
    ("Bolivarian Republic of Venezuela", "VE"),
    ("Virgin Islands, British", "VG"),
    ("Virgin Islands, U.S.", "VI"),
    ("Virgin Islands of the United States", "VI"),
    ("Viet Nam", "VN"),
    ("Socialist Republic of Viet Nam", "VN"),
    ("Republic of Vanuatu", "VU"),
    ("Independent State of Samoa", "WS"),
    ("Republic of Yemen", "YE"),
    ("Republic of South Africa", "ZA"),
    ("Republic of Zambia", "ZM"),
    ("Republic of Zimbabwe", "ZW"),
];

#[cfg(test)]
mod tests {
    use super::*;

    fn iso2(text: &str) -> Option<String> {
        Country::from_text(text).and_then(|c| c.iso2)
    }

    #[test]
    fn usa_us_and_united_states_are_the_united_states() {
        for text in ["USA", "US", "us", "U.S.A.", "United States", "united states of america", " The United States "] {
            let country = Country::from_text(text).unwrap();
            assert_eq!(country, Country { name: "United States".into(), iso2: Some("US".into()) }, "{text}");
        }
    }

    #[test]
    fn uk_gb_great_britain_and_england_are_the_united_kingdom() {
        for text in ["UK", "GB", "gbr", "United Kingdom", "Great Britain", "England", "U.K."] {
            let country = Country::from_text(text).unwrap();
            assert_eq!(country, Country { name: "United Kingdom".into(), iso2: Some("GB".into()) }, "{text}");
        }
    }

    #[test]
    fn names_are_read_in_any_case_and_with_or_without_accents() {
        assert_eq!(iso2("france"), Some("FR".into()));
        assert_eq!(iso2("FR"), Some("FR".into()));
        assert_eq!(iso2("Deutschland"), Some("DE".into()));
        assert_eq!(iso2("Österreich"), Some("AT".into()));
        assert_eq!(iso2("osterreich"), Some("AT".into()));
        assert_eq!(iso2("MÉXICO"), Some("MX".into()));
        assert_eq!(iso2("Cote d'Ivoire"), Some("CI".into()));
        assert_eq!(iso2("Côte d’Ivoire"), Some("CI".into()));
        assert_eq!(iso2("Turkey"), Some("TR".into()));
        assert_eq!(iso2("St Kitts & Nevis"), Some("KN".into()));
        assert_eq!(iso2("Korea, Republic of"), Some("KR".into()));
        assert_eq!(Country::from_text("Russian Federation").unwrap().name, "Russia");
    }

    #[test]
    fn alpha_3_codes_are_read() {
        assert_eq!(Country::from_text("DEU"), Some(Country { name: "Germany".into(), iso2: Some("DE".into()) }));
        assert_eq!(iso2("che"), Some("CH".into()));
    }

    #[test]
    fn unknown_text_is_kept_as_given_without_a_code() {
        assert_eq!(Country::from_text("  Atlantis "), Some(Country { name: "Atlantis".into(), iso2: None }));
        assert!(!Country::from_text("Atlantis").unwrap().is_known());
        assert_eq!(Country::from_text("   "), None);
    }

    #[test]
    fn the_table_holds_every_iso_country_once() {
        assert_eq!(COUNTRIES.len(), 249);
        let mut codes: Vec<&str> = COUNTRIES.iter().flat_map(|(a2, a3, _)| [*a2, *a3]).collect();
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), 2 * 249);
        assert!(COUNTRIES.iter().all(|(a2, a3, name)| a2.len() == 2 && a3.len() == 3 && !name.is_empty()));
        assert_eq!(Country::from_iso2("fr").unwrap().name, "France");
    }

    #[test]
    fn every_name_and_alias_leads_to_one_country_only() {
        let mut seen: HashMap<String, &str> = HashMap::new();
        let names = COUNTRIES.iter().map(|&(iso2, _, name)| (name, iso2));
        for (name, iso2) in names.chain(ISO_ALIASES.iter().copied()).chain(COMMON_ALIASES.iter().copied()) {
            assert!(COUNTRIES.iter().any(|(code, _, _)| *code == iso2), "{name} names an unknown code {iso2}");
            if let Some(other) = seen.insert(fold(name), iso2) {
                assert_eq!(other, iso2, "{name} folds to a name of another country");
            }
            assert_eq!(lookup(name).map(|row| row.0), Some(iso2), "{name} is read as another country");
        }
    }
}
