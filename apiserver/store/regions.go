package store

import (
	"slices"
	"strings"
)

// Regions are the pool locations the live API accepts, in its order
// (common/src/regions.rs REGIONS).
var Regions = []string{"europe", "na", "latam", "apac", "mena", "ssa", "cis"}

// ValidRegion reports whether r is a pool location (case-sensitive, as live).
func ValidRegion(r string) bool { return slices.Contains(Regions, r) }

// CountryRegion maps an ISO 3166-1 alpha-2 country code (any case) to its
// region, or "" for an unknown code: common/src/regions.rs
// country_to_region, copied entry for entry.
func CountryRegion(country string) string { return countryRegions[strings.ToUpper(country)] }

var countryRegions = map[string]string{
	"AT": "europe", "BE": "europe", "FR": "europe", "DE": "europe", "LI": "europe", "LU": "europe", "MC": "europe", "NL": "europe", "CH": "europe", "DK": "europe", "EE": "europe", "FI": "europe", "IS": "europe", "IE": "europe", "LV": "europe", "LT": "europe",
	"NO": "europe", "SE": "europe", "GB": "europe", "UK": "europe", "AD": "europe", "AL": "europe", "BA": "europe", "HR": "europe", "CY": "europe", "GR": "europe", "IT": "europe", "MT": "europe", "ME": "europe", "MK": "europe", "PT": "europe", "SM": "europe",
	"RS": "europe", "SI": "europe", "ES": "europe", "VA": "europe", "XK": "europe", "BG": "europe", "CZ": "europe", "HU": "europe", "PL": "europe", "RO": "europe", "SK": "europe",
	"RU": "cis", "BY": "cis", "UA": "cis", "MD": "cis", "AM": "cis", "AZ": "cis", "GE": "cis", "KZ": "cis", "KG": "cis", "TJ": "cis", "TM": "cis", "UZ": "cis",
	"US": "na", "CA": "na", "MX": "na", "GT": "na", "BZ": "na", "HN": "na", "SV": "na", "NI": "na", "CR": "na", "PA": "na", "CU": "na", "JM": "na", "HT": "na", "DO": "na", "PR": "na", "BS": "na",
	"BB": "na", "TT": "na", "LC": "na", "VC": "na", "GD": "na", "AG": "na", "DM": "na", "KN": "na", "AW": "na", "CW": "na", "SX": "na", "BM": "na", "KY": "na", "VI": "na", "VG": "na", "TC": "na",
	"AI": "na", "MS": "na", "GP": "na", "MQ": "na", "MF": "na", "BL": "na", "GL": "na", "PM": "na",
	"AR": "latam", "BO": "latam", "BR": "latam", "CL": "latam", "CO": "latam", "EC": "latam", "GY": "latam", "PY": "latam", "PE": "latam", "SR": "latam", "UY": "latam", "VE": "latam", "GF": "latam", "FK": "latam",
	"CN": "apac", "JP": "apac", "KR": "apac", "KP": "apac", "MN": "apac", "TW": "apac", "HK": "apac", "MO": "apac", "SG": "apac", "MY": "apac", "TH": "apac", "VN": "apac", "PH": "apac", "ID": "apac", "MM": "apac", "KH": "apac",
	"LA": "apac", "BN": "apac", "TL": "apac", "IN": "apac", "PK": "apac", "BD": "apac", "LK": "apac", "NP": "apac", "BT": "apac", "MV": "apac", "AF": "apac", "AU": "apac", "NZ": "apac", "PG": "apac", "FJ": "apac", "SB": "apac",
	"VU": "apac", "NC": "apac", "PF": "apac", "WS": "apac", "TO": "apac", "FM": "apac", "PW": "apac", "MH": "apac", "KI": "apac", "NR": "apac", "TV": "apac", "GU": "apac", "MP": "apac", "AS": "apac", "CK": "apac", "NU": "apac",
	"TK": "apac", "WF": "apac",
	"SA": "mena", "AE": "mena", "QA": "mena", "KW": "mena", "BH": "mena", "OM": "mena", "IR": "mena", "IQ": "mena", "SY": "mena", "JO": "mena", "LB": "mena", "PS": "mena", "IL": "mena", "YE": "mena", "TR": "mena", "EG": "mena",
	"DZ": "mena", "MA": "mena", "TN": "mena", "LY": "mena", "SD": "mena", "EH": "mena", "MR": "mena", "ML": "mena", "NE": "mena", "DJ": "mena", "ER": "mena", "ET": "mena", "SO": "mena", "KE": "mena", "UG": "mena", "TZ": "mena",
	"RW": "mena", "BI": "mena", "CD": "mena", "CG": "mena", "GA": "mena", "CM": "mena", "CF": "mena", "AO": "mena",
	"TD": "ssa", "SS": "ssa", "NA": "ssa", "BW": "ssa", "ZW": "ssa", "ZM": "ssa", "MW": "ssa", "MZ": "ssa", "SZ": "ssa", "LS": "ssa",
}

// validCountry is live's is_valid_country_code: two capital letters.
func validCountry(c string) bool {
	return len(c) == 2 && c[0] >= 'A' && c[0] <= 'Z' && c[1] >= 'A' && c[1] <= 'Z'
}
