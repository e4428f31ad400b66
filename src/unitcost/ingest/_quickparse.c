/* The quick parse of JSON event lines, in one pass: shape test and typed values together.
 *
 * This does in C what `quickjson.py` does with Arrow's RE2 kernel (the shape test) and
 * DuckDB's `json_transform` (the typing), which together were about a third of the CPU of
 * an ingest. It only ever says yes to a line it is sure of: a JSON object whose keys are all
 * known, each written once, each value of the plain kind its field takes as is (a token count
 * as digits within its limits, a name as a string without escapes, a timestamp as an RFC 3339
 * string of the common form...). Any other line -- an escape, an unknown or repeated key, a
 * count written as text, a timestamp in another form, a number with more digits than a double
 * holds exactly, malformed JSON -- is flagged, and the Python side sends it to the careful
 * parse and the full checks, which accept it or name its problem. So this parser can be
 * stricter than the checks, never looser: a flag costs speed, a wrong "yes" would cost money.
 *
 * The input is an Arrow large_string array (offsets and data); the output is one Arrow-layout
 * column per field (validity bitmap plus values, offsets and data for text), built by the
 * caller with `pyarrow.Array.from_buffers`. The GIL is released while parsing.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

enum kind {
    K_IGNORED = 0, /* a computed column of unitcost's own exports: any scalar, not kept */
    K_TEXT = 1,    /* a string, an integer of at most 18 digits, true or false, as text */
    K_CHOICE = 2,  /* one of a few strings, spelt exactly */
    K_INT = 3,     /* digits only, within a number of digits */
    K_FLOAT = 4,   /* a non-negative JSON number a double holds exactly */
    K_BOOL = 5,
    K_TS = 6,      /* an RFC 3339 string: YYYY-MM-DDTHH:MM:SS[.ffffff](Z|±HH:MM|±HHMM|±HH)? */
    K_MONEY = 7,   /* a plain decimal amount (see scan_money), as DECIMAL(18, 12) */
    K_MAP = 8,     /* an object of text values (K_TEXT), keys unique */
};

#define MAX_FIELDS 128
#define MAX_TAGS 64
#define MAX_CHOICES 16
#define MAX_DEFAULT 16 /* bytes of a default text */

typedef struct {
    const char *name;
    Py_ssize_t name_len;
    int kind;
    int min_digits, max_digits, zero_ok; /* K_INT: the digits the shape takes */
    int64_t low, high;                   /* K_INT: the range the checks take */
    int has_default, required;
    int64_t default_int;                 /* K_INT, K_BOOL */
    const char *default_text;            /* K_TEXT, K_CHOICE */
    Py_ssize_t default_len;
    int n_choices;
    const char *choices[MAX_CHOICES];
    Py_ssize_t choice_lens[MAX_CHOICES];
} field_spec;

/* A byte buffer: `len` is its bytes, or the entries of an offsets buffer. */
typedef struct {
    char *data;
    size_t len, cap;
} buf;

/* What phase one found for a field of the line being parsed. */
enum state { ABSENT = 0, IS_NULL = 1, HAS_VALUE = 2 };

typedef struct {
    int state;
    const char *start; /* text: the string's content (no quotes) or the literal's text */
    Py_ssize_t len;
    int64_t i; /* K_INT, K_TS (microseconds since the epoch, UTC), K_BOOL */
    double d;  /* K_FLOAT */
} slot;

typedef struct {
    /* every column: a validity bitmap */
    buf valid;
    /* K_TEXT, K_CHOICE, K_MONEY: int32 offsets and data; K_INT, K_TS: int64; K_FLOAT: double;
       K_BOOL: a bitmap; K_MAP: int32 offsets of entries */
    buf values;
    buf data;
    /* K_MAP: keys and items, each as int32 offsets and data */
    buf key_offsets, key_data, item_offsets, item_data;
    int32_t entries; /* K_MAP: entries so far */
    Py_ssize_t n_valid; /* rows with a value: a column with none is returned as None */
} column;

static inline void skip_ws(const char **p, const char *end) {
    while (*p < end && (**p == ' ' || **p == '\t' || **p == '\n' || **p == '\r')) (*p)++;
}

/* A string without escapes or control characters: its content is its value. On success
   *p is past the closing quote. */
static inline int scan_string(const char **p, const char *end, const char **start, Py_ssize_t *len) {
    const char *q = *p;
    if (q >= end || *q != '"') return -1;
    q++;
    const char *s = q;
#ifdef __SSE2__
    /* Sixteen bytes at a time to the first quote, backslash or control character. */
    const __m128i quote = _mm_set1_epi8('"'), backslash = _mm_set1_epi8('\\'), space = _mm_set1_epi8(0x1f);
    while (end - q >= 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)q);
        __m128i stop = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, backslash)),
                                    _mm_cmpeq_epi8(_mm_max_epu8(v, space), space));
        int mask = _mm_movemask_epi8(stop);
        if (mask) {
            q += __builtin_ctz((unsigned)mask);
            break;
        }
        q += 16;
    }
#endif
    while (q < end) {
        unsigned char c = (unsigned char)*q;
        if (c == '"') {
            *start = s;
            *len = q - s;
            *p = q + 1;
            return 0;
        }
        if (c == '\\' || c < 0x20) return -1;
        q++;
    }
    return -1;
}

/* A JSON number as the grammar spells it (RFC 8259); *p past it. */
static inline int scan_number(const char **p, const char *end) {
    const char *q = *p;
    if (q < end && *q == '-') q++;
    if (q >= end) return -1;
    if (*q == '0') {
        q++;
    } else if (*q >= '1' && *q <= '9') {
        while (q < end && *q >= '0' && *q <= '9') q++;
    } else {
        return -1;
    }
    if (q < end && *q == '.') {
        q++;
        const char *digits = q;
        while (q < end && *q >= '0' && *q <= '9') q++;
        if (q == digits) return -1;
    }
    if (q < end && (*q == 'e' || *q == 'E')) {
        q++;
        if (q < end && (*q == '+' || *q == '-')) q++;
        const char *digits = q;
        while (q < end && *q >= '0' && *q <= '9') q++;
        if (q == digits) return -1;
    }
    *p = q;
    return 0;
}

static inline int scan_literal(const char **p, const char *end, const char *word, Py_ssize_t n) {
    if (end - *p < n || memcmp(*p, word, (size_t)n) != 0) return -1;
    *p += n;
    return 0;
}

/* Text: a string, an integer of at most 18 digits (no "-0"), true or false. */
static int scan_text(const char **p, const char *end, const char **start, Py_ssize_t *len) {
    const char *q = *p;
    if (q >= end) return -1;
    if (*q == '"') return scan_string(p, end, start, len);
    if (*q == 't') {
        if (scan_literal(p, end, "true", 4)) return -1;
        *start = q;
        *len = 4;
        return 0;
    }
    if (*q == 'f') {
        if (scan_literal(p, end, "false", 5)) return -1;
        *start = q;
        *len = 5;
        return 0;
    }
    const char *s = q;
    if (*q == '-') q++;
    if (q >= end) return -1;
    const char *digits = q;
    if (*q == '0') {
        q++;
        if (s != digits) return -1; /* "-0" reads as a double elsewhere, spelt "-0.0" */
    } else {
        while (q < end && *q >= '0' && *q <= '9') q++;
    }
    Py_ssize_t n = q - digits;
    if (n == 0 || n > 18) return -1;
    /* a fraction or exponent makes it a double, which other parsers spell their own way */
    if (q < end && (*q == '.' || *q == 'e' || *q == 'E')) return -1;
    *start = s;
    *len = q - s;
    *p = q;
    return 0;
}

static const double POW10[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
                               1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

/* A non-negative number whose value a double computes exactly from integers (Clinger's fast
   path: a mantissa of at most 2^53 and a power of ten of at most 22, so one correctly rounded
   multiplication or division), which is the value every correct parser gives it. */
static int scan_float(const char **p, const char *end, double *out) {
    const char *q = *p;
    uint64_t mantissa = 0;
    int exp10 = 0;
    if (q >= end) return -1;
    if (*q == '0') {
        q++;
    } else if (*q >= '1' && *q <= '9') {
        while (q < end && *q >= '0' && *q <= '9') {
            if (mantissa > 900719925474099ULL) return -1; /* stays below 2^53 */
            mantissa = mantissa * 10 + (uint64_t)(*q - '0');
            q++;
        }
    } else {
        return -1;
    }
    if (q < end && *q == '.') {
        q++;
        const char *digits = q;
        while (q < end && *q >= '0' && *q <= '9') {
            if (mantissa > 900719925474099ULL) return -1;
            mantissa = mantissa * 10 + (uint64_t)(*q - '0');
            exp10--;
            q++;
        }
        if (q == digits) return -1;
    }
    if (q < end && (*q == 'e' || *q == 'E')) {
        q++;
        int negative = 0;
        if (q < end && (*q == '+' || *q == '-')) {
            negative = *q == '-';
            q++;
        }
        const char *digits = q;
        int e = 0;
        while (q < end && *q >= '0' && *q <= '9') {
            if (e > 1000) return -1;
            e = e * 10 + (*q - '0');
            q++;
        }
        if (q == digits) return -1;
        exp10 += negative ? -e : e;
    }
    if (mantissa > (1ULL << 53) || exp10 < -22 || exp10 > 22) return -1;
    double value = (double)mantissa;
    *out = exp10 >= 0 ? value * POW10[exp10] : value / POW10[-exp10];
    *p = q;
    return 0;
}

/* A plain decimal amount, not negative, without exponent, at most 15 significant digits (so it
   converts to the same decimal whether read exactly or through a double first, as the careful
   parse does), at most 6 digits before the point and 12 after (DECIMAL(18, 12)): as an integer
   of 1e-12 units. */
static int scan_money(const char **p, const char *end, int64_t *out) {
    const char *q = *p;
    int significant = 0, int_digits = 0, frac_digits = 0;
    int64_t value = 0;
    if (q >= end) return -1;
    if (*q == '0') {
        q++;
    } else if (*q >= '1' && *q <= '9') {
        while (q < end && *q >= '0' && *q <= '9') {
            if (++int_digits > 6) return -1;
            value = value * 10 + (*q - '0');
            significant++;
            q++;
        }
    } else {
        return -1;
    }
    if (q < end && *q == '.') {
        q++;
        const char *digits = q;
        while (q < end && *q >= '0' && *q <= '9') {
            if (++frac_digits > 12) return -1;
            if (significant || *q != '0') significant++;
            value = value * 10 + (*q - '0');
            q++;
        }
        if (q == digits) return -1;
    }
    if (q < end && (*q == 'e' || *q == 'E')) return -1;
    if (significant > 15) return -1;
    while (frac_digits++ < 12) value *= 10;
    *out = value;
    *p = q;
    return 0;
}

static inline int two_digits(const char *s, int *out) {
    if (s[0] < '0' || s[0] > '9' || s[1] < '0' || s[1] > '9') return -1;
    *out = (s[0] - '0') * 10 + (s[1] - '0');
    return 0;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm). */
static int64_t days_from_civil(int64_t y, int m, int d) {
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static int days_in_month(int y, int m) {
    static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (m == 2 && ((y % 4 == 0 && y % 100 != 0) || y % 400 == 0)) return 29;
    return days[m - 1];
}

/* YYYY-MM-DD(T| )HH:MM:SS(.f{1,6})?(Z|±HH:MM|±HHMM|±HH)? -- a naive time is UTC -- in
   microseconds since the epoch. Any other spelling is left to the careful parse. */
static int parse_ts(const char *s, Py_ssize_t n, int64_t *out) {
    int y1, y2, mo, d, h, mi, sec;
    if (n < 19) return -1;
    if (two_digits(s, &y1) || two_digits(s + 2, &y2) || s[4] != '-' || two_digits(s + 5, &mo) ||
        s[7] != '-' || two_digits(s + 8, &d) || (s[10] != 'T' && s[10] != ' ') || two_digits(s + 11, &h) ||
        s[13] != ':' || two_digits(s + 14, &mi) || s[16] != ':' || two_digits(s + 17, &sec))
        return -1;
    int year = y1 * 100 + y2;
    if (year < 1 || mo < 1 || mo > 12 || d < 1 || d > days_in_month(year, mo) || h > 23 || mi > 59 || sec > 59)
        return -1;
    Py_ssize_t i = 19;
    int64_t micros = 0;
    if (i < n && s[i] == '.') {
        i++;
        int digits = 0;
        while (i < n && s[i] >= '0' && s[i] <= '9') {
            if (++digits > 6) return -1;
            micros = micros * 10 + (s[i] - '0');
            i++;
        }
        if (!digits) return -1;
        while (digits++ < 6) micros *= 10;
    }
    int64_t offset = 0;
    if (i < n) {
        if (s[i] == 'Z' && i + 1 == n) {
            i++;
        } else if (s[i] == '+' || s[i] == '-') {
            /* +HH:MM, +HHMM or +HH (DuckDB's and PostgreSQL's own output writes +00) */
            int oh, om = 0;
            Py_ssize_t rest = n - i - 1;
            if (rest < 2 || two_digits(s + i + 1, &oh)) return -1;
            if (rest == 5 && s[i + 3] == ':') {
                if (two_digits(s + i + 4, &om)) return -1;
            } else if (rest == 4) {
                if (two_digits(s + i + 3, &om)) return -1;
            } else if (rest != 2) {
                return -1;
            }
            if (oh > 14 || om > 59) return -1;
            offset = (int64_t)(oh * 60 + om) * 60;
            if (s[i] == '-') offset = -offset;
            i = n;
        } else {
            return -1;
        }
    }
    if (i != n) return -1;
    int64_t seconds = days_from_civil(year, mo, d) * 86400 + h * 3600 + mi * 60 + sec - offset;
    *out = seconds * 1000000 + micros;
    return 0;
}

/* Digits only: no sign, no leading zero (but "0" itself where zero is allowed), between
   min_digits and max_digits of them. */
static int scan_int(const char **p, const char *end, const field_spec *f, int64_t *out) {
    const char *q = *p;
    if (q >= end || *q < '0' || *q > '9') return -1;
    if (*q == '0') {
        if (!f->zero_ok) return -1;
        q++;
        if (q < end && ((*q >= '0' && *q <= '9') || *q == '.' || *q == 'e' || *q == 'E')) return -1;
        *out = 0;
        *p = q;
        return 0;
    }
    int64_t value = 0;
    int digits = 0;
    while (q < end && *q >= '0' && *q <= '9') {
        if (++digits > f->max_digits) return -1;
        value = value * 10 + (*q - '0');
        q++;
    }
    if (digits < f->min_digits) return -1;
    if (q < end && (*q == '.' || *q == 'e' || *q == 'E')) return -1;
    *out = value;
    *p = q;
    return 0;
}

/* After an object's member: a comma, another member follows (1); the closing brace (0); each
   with the whitespace around it. Anything else is not JSON (-1). */
static inline int after_member(const char **p, const char *end) {
    skip_ws(p, end);
    if (*p < end && **p == ',') {
        (*p)++;
        skip_ws(p, end);
        return 1;
    }
    if (*p < end && **p == '}') {
        (*p)++;
        return 0;
    }
    return -1;
}

/* The tags object: `{}` or string keys (unique) with text values. */
static int scan_map(const char **p, const char *end, const char **start, Py_ssize_t *len) {
    const char *q = *p, *s = q;
    const char *keys[MAX_TAGS];
    Py_ssize_t key_lens[MAX_TAGS];
    int n = 0;
    if (q >= end || *q != '{') return -1;
    q++;
    skip_ws(&q, end);
    if (q < end && *q == '}') {
        q++;
    } else {
        for (;;) {
            const char *k, *v;
            Py_ssize_t kn, vn;
            if (scan_string(&q, end, &k, &kn)) return -1;
            for (int j = 0; j < n; j++)
                if (key_lens[j] == kn && memcmp(keys[j], k, (size_t)kn) == 0) return -1;
            if (n == MAX_TAGS) return -1;
            keys[n] = k;
            key_lens[n] = kn;
            n++;
            skip_ws(&q, end);
            if (q >= end || *q != ':') return -1;
            q++;
            skip_ws(&q, end);
            if (scan_text(&q, end, &v, &vn)) return -1;
            int more = after_member(&q, end);
            if (more < 0) return -1;
            if (!more) break;
        }
    }
    *start = s;
    *len = q - s;
    *p = q;
    return 0;
}

/* Keys are found through a small open-addressing table built for each call, and first by a
   guess: the key that followed the previous one last time (lines of a file repeat their order). */
#define KEY_TABLE 256

typedef struct {
    short slot[KEY_TABLE]; /* field index + 1, or 0 */
    int next[MAX_FIELDS + 1]; /* the guess: after field i (or at the start, MAX_FIELDS), field next[i] */
} key_table;

static inline unsigned key_hash(const char *key, Py_ssize_t len) {
    unsigned h = (unsigned)len * 31u;
    if (len) h += (unsigned char)key[0] * 7u + (unsigned char)key[len - 1] * 13u + (unsigned char)key[len / 2];
    return h & (KEY_TABLE - 1);
}

static inline int same_key(const field_spec *f, const char *key, Py_ssize_t len) {
    return f->name_len == len && memcmp(f->name, key, (size_t)len) == 0;
}

static void build_key_table(key_table *t, const field_spec *fields, int n_fields) {
    memset(t->slot, 0, sizeof t->slot);
    for (int i = 0; i <= MAX_FIELDS; i++) t->next[i] = 0;
    for (int i = 0; i < n_fields; i++) {
        unsigned h = key_hash(fields[i].name, fields[i].name_len);
        while (t->slot[h]) h = (h + 1) & (KEY_TABLE - 1);
        t->slot[h] = (short)(i + 1);
    }
}

static inline int find_field(key_table *t, const field_spec *fields, int previous, const char *key,
                             Py_ssize_t len) {
    int guess = t->next[previous];
    if (same_key(&fields[guess], key, len)) return guess;
    for (unsigned h = key_hash(key, len); t->slot[h]; h = (h + 1) & (KEY_TABLE - 1)) {
        int i = t->slot[h] - 1;
        if (same_key(&fields[i], key, len)) {
            t->next[previous] = i;
            return i;
        }
    }
    return -1;
}

/* Phase one: is the line plain, and where is each field's value? */
static int parse_line(const char *p, const char *end, const field_spec *fields, int n_fields, slot *slots,
                      key_table *keys) {
    for (int i = 0; i < n_fields; i++) slots[i].state = ABSENT;
    skip_ws(&p, end);
    if (p >= end || *p != '{') return -1;
    p++;
    skip_ws(&p, end);
    if (p < end && *p == '}') {
        p++;
    } else {
        for (int previous = MAX_FIELDS;;) {
            const char *key;
            Py_ssize_t key_len;
            if (scan_string(&p, end, &key, &key_len)) return -1;
            int i = find_field(keys, fields, previous, key, key_len);
            if (i < 0 || slots[i].state != ABSENT) return -1; /* unknown, or written twice */
            previous = i;
            const field_spec *f = &fields[i];
            slot *s = &slots[i];
            skip_ws(&p, end);
            if (p >= end || *p != ':') return -1;
            p++;
            skip_ws(&p, end);
            if (p < end && *p == 'n') {
                if (scan_literal(&p, end, "null", 4)) return -1;
                s->state = IS_NULL;
            } else {
                s->state = HAS_VALUE;
                switch (f->kind) {
                case K_IGNORED:
                    if (p < end && *p == '"') {
                        if (scan_string(&p, end, &s->start, &s->len)) return -1;
                    } else if (p < end && *p == 't') {
                        if (scan_literal(&p, end, "true", 4)) return -1;
                    } else if (p < end && *p == 'f') {
                        if (scan_literal(&p, end, "false", 5)) return -1;
                    } else if (scan_number(&p, end)) {
                        return -1;
                    }
                    break;
                case K_TEXT:
                    if (scan_text(&p, end, &s->start, &s->len)) return -1;
                    break;
                case K_CHOICE: {
                    if (scan_string(&p, end, &s->start, &s->len)) return -1;
                    int found = 0;
                    for (int c = 0; c < f->n_choices && !found; c++)
                        found = f->choice_lens[c] == s->len && memcmp(f->choices[c], s->start, (size_t)s->len) == 0;
                    if (!found) return -1;
                    break;
                }
                case K_INT:
                    if (scan_int(&p, end, f, &s->i)) return -1;
                    break;
                case K_FLOAT:
                    if (scan_float(&p, end, &s->d)) return -1;
                    break;
                case K_BOOL:
                    if (p < end && *p == 't') {
                        if (scan_literal(&p, end, "true", 4)) return -1;
                        s->i = 1;
                    } else {
                        if (scan_literal(&p, end, "false", 5)) return -1;
                        s->i = 0;
                    }
                    break;
                case K_TS:
                    if (scan_string(&p, end, &s->start, &s->len) || parse_ts(s->start, s->len, &s->i)) return -1;
                    break;
                case K_MONEY:
                    if (scan_money(&p, end, &s->i)) return -1;
                    break;
                case K_MAP:
                    if (scan_map(&p, end, &s->start, &s->len)) return -1;
                    break;
                default:
                    return -1;
                }
            }
            int more = after_member(&p, end);
            if (more < 0) return -1;
            if (!more) break;
        }
    }
    skip_ws(&p, end);
    return p == end ? 0 : -1;
}

/* What the checks take as given on a plain line: the limits no shape encodes, and the rules
   across the token counts (`normalise._usage_checks`, which a test holds this to). */
typedef struct {
    int64_t earliest_us, latest_us; /* a timestamp outside is suspect (a wrong unit, a clock) */
    double max_float;
    Py_ssize_t max_text; /* bytes: a longer text may still be short enough in characters */
    int tokens[12];      /* field index of each of events.TOKEN_FIELDS, in that order */
} rules;

enum { INPUT, CACHE_READ, CACHE_WRITE_5M, CACHE_WRITE_1H, INPUT_AUDIO, CACHE_AUDIO_READ, INPUT_IMAGE,
       CACHE_IMAGE_READ, OUTPUT, REASONING, OUTPUT_AUDIO, OUTPUT_IMAGE };

/* Phase one and a half: defaults, limits and the rules across fields. A line that breaks any
   goes the careful way, which names the problem. */
static int finish_line(const field_spec *fields, int n_fields, slot *slots, const rules *r) {
    for (int i = 0; i < n_fields; i++) {
        const field_spec *f = &fields[i];
        slot *s = &slots[i];
        if (f->kind == K_IGNORED) continue;
        int has = s->state == HAS_VALUE;
        if (has && f->kind == K_TEXT && s->len == 0) has = 0; /* an empty text is no text */
        if (has) {
            switch (f->kind) {
            case K_TEXT:
                if (s->len > r->max_text) return -1;
                break;
            case K_INT:
                if (s->i < f->low || s->i > f->high) return -1;
                break;
            case K_FLOAT:
                if (s->d > r->max_float) return -1;
                break;
            case K_TS:
                if (s->i < r->earliest_us || s->i > r->latest_us) return -1;
                break;
            default:
                break;
            }
            continue;
        }
        if (f->required) return -1;
        if (f->kind == K_MAP) { /* no tags: an empty map */
            s->state = HAS_VALUE;
            s->len = 0;
        } else if (f->has_default) {
            s->state = HAS_VALUE;
            s->i = f->default_int;
            s->start = f->default_text;
            s->len = f->default_len;
        } else {
            s->state = IS_NULL;
        }
    }
    int64_t t[12];
    for (int k = 0; k < 12; k++) t[k] = slots[r->tokens[k]].i; /* every count has a default: set */
    if (t[CACHE_AUDIO_READ] > t[CACHE_READ] || t[CACHE_AUDIO_READ] > t[INPUT_AUDIO] ||
        t[CACHE_IMAGE_READ] > t[INPUT_IMAGE] || t[CACHE_AUDIO_READ] + t[CACHE_IMAGE_READ] > t[CACHE_READ] ||
        t[CACHE_READ] > t[INPUT] ||
        t[CACHE_READ] + t[CACHE_WRITE_5M] + t[CACHE_WRITE_1H] + t[INPUT_AUDIO] - t[CACHE_AUDIO_READ] +
                t[INPUT_IMAGE] - t[CACHE_IMAGE_READ] >
            t[INPUT] ||
        t[REASONING] > t[OUTPUT] || t[REASONING] + t[OUTPUT_AUDIO] + t[OUTPUT_IMAGE] > t[OUTPUT])
        return -1;
    return 0;
}

/* Every column's buffers are allocated at their final size before the parse (text data at the
   size of all the lines, which bounds it): the writes below need no checks. */
static inline void set_bit(buf *bits, int64_t row) { bits->data[row >> 3] |= (char)(1 << (row & 7)); }

static inline void put_text(buf *offsets, buf *data, const char *s, Py_ssize_t n) {
    if (n) {
        memcpy(data->data + data->len, s, (size_t)n);
        data->len += (size_t)n;
    }
    ((int32_t *)offsets->data)[++offsets->len] = (int32_t)data->len;
}

/* The tags of a plain line: scanned again, now known to be well formed. */
static void put_map(column *c, const char *p, const char *end) {
    p++; /* { */
    skip_ws(&p, end);
    while (p < end && *p != '}') {
        const char *k, *v;
        Py_ssize_t kn, vn;
        if (scan_string(&p, end, &k, &kn)) return;
        skip_ws(&p, end);
        p++; /* : */
        skip_ws(&p, end);
        if (scan_text(&p, end, &v, &vn)) return;
        put_text(&c->key_offsets, &c->key_data, k, kn);
        put_text(&c->item_offsets, &c->item_data, v, vn);
        c->entries++;
        skip_ws(&p, end);
        if (p < end && *p == ',') {
            p++;
            skip_ws(&p, end);
        }
    }
}

/* Phase two: the row's values (or nulls, for a line that is not plain) into every column. */
static void put_row(column *columns, const field_spec *fields, int n_fields, const slot *slots, int plain,
                    int64_t row) {
    for (int i = 0; i < n_fields; i++) {
        const field_spec *f = &fields[i];
        column *c = &columns[i];
        const slot *s = &slots[i];
        int has = plain && s->state == HAS_VALUE;
        if (has) {
            set_bit(&c->valid, row);
            c->n_valid++;
        }
        switch (f->kind) {
        case K_TEXT:
        case K_CHOICE:
            put_text(&c->values, &c->data, s->start, has ? s->len : 0);
            break;
        case K_INT:
        case K_TS:
            if (has) ((int64_t *)c->values.data)[row] = s->i;
            break;
        case K_MONEY: /* decimal128: little-endian, never negative here */
            if (has) {
                ((int64_t *)c->values.data)[2 * row] = s->i;
                ((int64_t *)c->values.data)[2 * row + 1] = 0;
            }
            break;
        case K_FLOAT:
            if (has) ((double *)c->values.data)[row] = s->d;
            break;
        case K_BOOL:
            if (has && s->i) set_bit(&c->values, row);
            break;
        case K_MAP:
            if (has && s->len) put_map(c, s->start, s->start + s->len);
            ((int32_t *)c->values.data)[row + 1] = c->entries;
            break;
        default:
            break;
        }
    }
}

/* The buffers are scratch space kept by each thread from one call to the next: fresh memory
   would cost the kernel a page fault and a zeroed page for every 4 KiB written (a third of the
   time, measured), where memory used before costs nothing. Their content is copied out at the
   end. Only bitmaps need zeroing; values under a null are never read. */
static int alloc_buf(buf *b, size_t size, size_t len) {
    if (b->cap < size || !b->data) {
        free(b->data);
        b->data = malloc(size ? size : 1);
        b->cap = b->data ? size : 0;
        if (!b->data) return -1;
    }
    b->len = len;
    return 0;
}

static int alloc_bits(buf *b, size_t size) {
    if (alloc_buf(b, size, size)) return -1;
    memset(b->data, 0, size);
    return 0;
}

/* Buffers at their final size: bitmaps and fixed-width values by the number of lines; a text
   column's data by the bytes of the lines plus its default on every line (a value is part of
   its line, or the default); the tags' entries by the bytes too (an entry takes at least 4 of
   them: `"":1`). Offsets count their entries in `len`, data its bytes. */
static int alloc_column(column *c, const field_spec *f, Py_ssize_t count, size_t bytes) {
    int kind = f->kind;
    size_t bits = (size_t)count / 8 + 1;
    c->entries = 0;
    c->n_valid = 0;
    if (alloc_bits(&c->valid, bits)) return -1;
    switch (kind) {
    case K_MONEY:
        return alloc_buf(&c->values, (size_t)count * 16, (size_t)count * 16);
    case K_TEXT:
    case K_CHOICE:
        if (alloc_buf(&c->values, ((size_t)count + 1) * 4, 0)) return -1;
        ((int32_t *)c->values.data)[0] = 0;
        return alloc_buf(&c->data, bytes + (size_t)count * (size_t)f->default_len, 0);
    case K_INT:
    case K_TS:
    case K_FLOAT:
        return alloc_buf(&c->values, (size_t)count * 8, (size_t)count * 8);
    case K_BOOL:
        return alloc_bits(&c->values, bits);
    case K_MAP: {
        size_t entries = bytes / 4 + 1;
        if (alloc_buf(&c->values, ((size_t)count + 1) * 4, ((size_t)count + 1) * 4) ||
            alloc_buf(&c->key_offsets, (entries + 1) * 4, 0) || alloc_buf(&c->key_data, bytes, 0) ||
            alloc_buf(&c->item_offsets, (entries + 1) * 4, 0) || alloc_buf(&c->item_data, bytes, 0))
            return -1;
        ((int32_t *)c->values.data)[0] = 0;
        ((int32_t *)c->key_offsets.data)[0] = 0;
        ((int32_t *)c->item_offsets.data)[0] = 0;
        return 0;
    }
    default:
        return 0;
    }
}

static _Thread_local column scratch[MAX_FIELDS];

static int read_spec(PyObject *spec, field_spec *fields, int *n_fields) {
    if (!PyTuple_Check(spec) || PyTuple_GET_SIZE(spec) > MAX_FIELDS) {
        PyErr_SetString(PyExc_ValueError, "spec: a tuple of at most 128 fields");
        return -1;
    }
    *n_fields = (int)PyTuple_GET_SIZE(spec);
    for (int i = 0; i < *n_fields; i++) {
        PyObject *choices, *fallback;
        field_spec *f = &fields[i];
        long long low, high;
        if (!PyArg_ParseTuple(PyTuple_GET_ITEM(spec, i), "y#iiiiO!LLOp", &f->name, &f->name_len, &f->kind,
                              &f->min_digits, &f->max_digits, &f->zero_ok, &PyTuple_Type, &choices, &low, &high,
                              &fallback, &f->required))
            return -1;
        f->low = low;
        f->high = high;
        f->has_default = fallback != Py_None;
        if (PyBytes_Check(fallback)) {
            f->default_text = PyBytes_AS_STRING(fallback);
            f->default_len = PyBytes_GET_SIZE(fallback);
            if (f->default_len > MAX_DEFAULT) {
                PyErr_Format(PyExc_ValueError, "spec: the default of field %d is longer than %d bytes", i, MAX_DEFAULT);
                return -1;
            }
        } else if (f->has_default) {
            f->default_int = PyLong_AsLongLong(fallback);
            if (f->default_int == -1 && PyErr_Occurred()) return -1;
        }
        if (f->kind < K_IGNORED || f->kind > K_MAP || f->max_digits > 18 || PyTuple_GET_SIZE(choices) > MAX_CHOICES) {
            PyErr_Format(PyExc_ValueError, "spec: bad field %d", i);
            return -1;
        }
        f->n_choices = (int)PyTuple_GET_SIZE(choices);
        for (int c = 0; c < f->n_choices; c++) {
            PyObject *choice = PyTuple_GET_ITEM(choices, c);
            if (!PyBytes_Check(choice)) {
                PyErr_SetString(PyExc_TypeError, "spec: choices are bytes");
                return -1;
            }
            f->choices[c] = PyBytes_AS_STRING(choice);
            f->choice_lens[c] = PyBytes_GET_SIZE(choice);
        }
    }
    return 0;
}

static PyObject *as_bytes(buf *b) {
    return PyBytes_FromStringAndSize(b->data ? b->data : "", (Py_ssize_t)b->len);
}

/* Offsets count their entries: one more int32 than that, the first one 0. */
static PyObject *offsets_bytes(buf *b) {
    return PyBytes_FromStringAndSize(b->data, (Py_ssize_t)(b->len + 1) * 4);
}

static PyObject *column_result(column *c, int kind) {
    if (!c->n_valid) Py_RETURN_NONE;
    switch (kind) {
    case K_IGNORED:
        Py_RETURN_NONE;
    case K_TEXT:
    case K_CHOICE:
        return Py_BuildValue("(NNN)", as_bytes(&c->valid), offsets_bytes(&c->values), as_bytes(&c->data));
    case K_MAP:
        return Py_BuildValue("(NNNNNN)", as_bytes(&c->valid), as_bytes(&c->values), offsets_bytes(&c->key_offsets),
                             as_bytes(&c->key_data), offsets_bytes(&c->item_offsets), as_bytes(&c->item_data));
    default:
        return Py_BuildValue("(NN)", as_bytes(&c->valid), as_bytes(&c->values));
    }
}

PyDoc_STRVAR(parse_doc,
             "parse(offsets, data, first, count, spec, earliest_us, latest_us, max_float, max_text, tokens)\n"
             "-> (suspect, columns)\n\n"
             "Parse and check `count` lines of a large_string array (int64 `offsets` and `data` buffers) from\n"
             "line `first`. `suspect` is a bitmap, a bit set for each line that is not a valid plain event; `columns`\n"
             "has, per field of `spec`, the Arrow buffers of its checked values, or None for a field with no\n"
             "value on any line (or ignored).");

static int read_rules(PyObject *tokens, const field_spec *fields, int n_fields, rules *r) {
    if (!PyTuple_Check(tokens) || PyTuple_GET_SIZE(tokens) != 12) {
        PyErr_SetString(PyExc_ValueError, "rules: the 12 token fields' indices");
        return -1;
    }
    for (int k = 0; k < 12; k++) {
        long index = PyLong_AsLong(PyTuple_GET_ITEM(tokens, k));
        if (index < 0 || index >= n_fields || fields[index].kind != K_INT || !fields[index].has_default) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "rules: a token field with a default");
            return -1;
        }
        r->tokens[k] = (int)index;
    }
    return 0;
}

static PyObject *parse(PyObject *self, PyObject *args) {
    Py_buffer offsets_view, data_view;
    Py_ssize_t first, count;
    PyObject *spec, *tokens;
    long long earliest, latest;
    rules r;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*y*nnOLLdnO", &offsets_view, &data_view, &first, &count, &spec, &earliest, &latest,
                          &r.max_float, &r.max_text, &tokens))
        return NULL;
    r.earliest_us = earliest;
    r.latest_us = latest;
    PyObject *result = NULL;
    field_spec *fields = calloc(MAX_FIELDS, sizeof *fields);
    column *columns = scratch;
    slot *slots = calloc(MAX_FIELDS, sizeof *slots);
    key_table *keys = malloc(sizeof *keys);
    unsigned char *suspect = NULL; /* a bitmap: the lines left to the careful checks */
    int n_fields = 0, failed = 0;
    if (!fields || !slots || !keys) {
        PyErr_NoMemory();
        goto done;
    }
    if (read_spec(spec, fields, &n_fields) || read_rules(tokens, fields, n_fields, &r)) goto done;
    const int64_t *offsets = offsets_view.buf;
    const char *data = data_view.buf;
    if (first < 0 || count < 0 || (first + count + 1) * (Py_ssize_t)sizeof(int64_t) > offsets_view.len) {
        PyErr_SetString(PyExc_ValueError, "lines out of the offsets' range");
        goto done;
    }
    for (Py_ssize_t i = first; i <= first + count; i++) {
        if (offsets[i] < 0 || offsets[i] > data_view.len || (i > first && offsets[i] < offsets[i - 1])) {
            PyErr_SetString(PyExc_ValueError, "offsets out of the data's range");
            goto done;
        }
    }
    suspect = calloc((size_t)count / 8 + 1, 1);
    if (!suspect) {
        PyErr_NoMemory();
        goto done;
    }
    build_key_table(keys, fields, n_fields);
    size_t bytes = (size_t)(offsets[first + count] - offsets[first]);
    if (bytes + (size_t)count * MAX_DEFAULT > INT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "more than 2 GiB of lines in one call");
        goto done;
    }
    for (int i = 0; i < n_fields && !failed; i++) failed = alloc_column(&columns[i], &fields[i], count, bytes);
    Py_BEGIN_ALLOW_THREADS;
    for (Py_ssize_t row = 0; row < count && !failed; row++) {
        const char *start = data + offsets[first + row], *end = data + offsets[first + row + 1];
        int ok = parse_line(start, end, fields, n_fields, slots, keys) == 0 &&
                 finish_line(fields, n_fields, slots, &r) == 0;
        if (!ok) suspect[row >> 3] |= (unsigned char)(1 << (row & 7));
        put_row(columns, fields, n_fields, slots, ok, (int64_t)row);
    }
    Py_END_ALLOW_THREADS;
    if (failed) {
        PyErr_NoMemory();
        goto done;
    }
    PyObject *list = PyList_New(n_fields);
    if (!list) goto done;
    for (int i = 0; i < n_fields; i++) {
        PyObject *column_buffers = column_result(&columns[i], fields[i].kind);
        if (!column_buffers) {
            Py_DECREF(list);
            goto done;
        }
        PyList_SET_ITEM(list, i, column_buffers);
    }
    result = Py_BuildValue("(NN)", PyBytes_FromStringAndSize((const char *)suspect, count / 8 + 1), list);
done:
    PyBuffer_Release(&offsets_view);
    PyBuffer_Release(&data_view);
    free(suspect);
    free(fields);
    free(slots);
    free(keys);
    return result;
}

static PyMethodDef methods[] = {
    {"parse", parse, METH_VARARGS, parse_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_quickparse", "The quick parse of JSON event lines (see quickjson.py).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__quickparse(void) { return PyModule_Create(&module); }
