/*
 * The usual entries of a zone's ``records`` read in C (geodns/zones/loader.py,
 * _Splice.fill): a line such as
 *
 *     h1: {A: "192.0.2.1"}
 *     mx: {MX: [{preference: 10, exchange: mail.example.net.}], TXT: "v=spf1 -all"}
 *
 * straight to the record sets the zone model holds, without the YAML nodes,
 * the per-value Python calls or the checks a value of that shape cannot
 * fail.  Only what is certainly valid is read here: a relative owner of
 * letters, digits and "_ - /" labels, the types A, AAAA, TXT, MX, NS, CNAME
 * and PTR, each with one value or a list of values, in the shapes
 * yamlsrc.flow_entry reads (its grammar, narrowed); the value already in
 * the form geodns shows it (an address as inet_ntop writes it, a name of
 * those labels).  Anything else, or anything that would be a problem (a
 * duplicate record, a name too long, ...), is None: the loader then reads
 * that entry as before (flow_entry or the parser), which reports every
 * problem at its file:line:column.  tests/test_zonetext.py compares both
 * ways on random lines.
 *
 * Optional, like geodns/_udpbatch.c: without it the loader reads every
 * entry in Python.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <arpa/inet.h>
#include <string.h>

/* The classes the zone model is made of (set by setup()), and where their
 * slots are: the objects are made here as their own constructors make them. */
static PyTypeObject *RData_t, *RRset_t, *Where_t, *CName_t;
static Py_ssize_t rd_parts, rd_text, rd_target;
static Py_ssize_t rr_owner, rr_rtype, rr_ttl, rr_rdatas, rr_where;

#define T_A 1
#define T_NS 2
#define T_CNAME 5
#define T_PTR 12
#define T_MX 15
#define T_TXT 16
#define T_AAAA 28

#define MAX_VALUES 64   /* more values in one list: read in Python */
#define MAX_TYPES 16    /* more types in one entry: read in Python */
#define MAX_TXT 60000   /* a longer TXT string: read in Python (the 65535-byte limit) */

static int
find_slot(PyTypeObject *t, const char *name, Py_ssize_t *off)
{
    for (PyMemberDef *m = t->tp_members; m != NULL && m->name != NULL; m++) {
        if (strcmp(m->name, name) == 0 && m->type == T_OBJECT_EX && !(m->flags & READONLY)) {
            *off = m->offset;
            return 0;
        }
    }
    PyErr_Format(PyExc_TypeError, "%s has no slot %s", t->tp_name, name);
    return -1;
}

static PyObject *
setup(PyObject *self, PyObject *args)
{
    (void)self;
    PyTypeObject *rd, *rr, *wh, *cn;
    if (!PyArg_ParseTuple(args, "O!O!O!O!", &PyType_Type, &rd, &PyType_Type, &rr,
                          &PyType_Type, &wh, &PyType_Type, &cn))
        return NULL;
    if (!PyType_IsSubtype(wh, &PyTuple_Type) || !PyType_IsSubtype(cn, &PyBytes_Type)) {
        PyErr_SetString(PyExc_TypeError, "Where must be a tuple and the name a bytes type");
        return NULL;
    }
    if (find_slot(rd, "parts", &rd_parts) || find_slot(rd, "text", &rd_text) ||
        find_slot(rd, "target", &rd_target) || find_slot(rr, "owner", &rr_owner) ||
        find_slot(rr, "rtype", &rr_rtype) || find_slot(rr, "ttl", &rr_ttl) ||
        find_slot(rr, "rdatas", &rr_rdatas) || find_slot(rr, "where", &rr_where))
        return NULL;
    Py_XSETREF(RData_t, (PyTypeObject *)Py_NewRef(rd));
    Py_XSETREF(RRset_t, (PyTypeObject *)Py_NewRef(rr));
    Py_XSETREF(Where_t, (PyTypeObject *)Py_NewRef(wh));
    Py_XSETREF(CName_t, (PyTypeObject *)Py_NewRef(cn));
    Py_RETURN_NONE;
}

#define SLOT(obj, off) (*(PyObject **)((char *)(obj) + (off)))

/* -- the line's grammar (a part of yamlsrc.flow_entry's) -------------------- */

typedef struct {
    Py_ssize_t at, len; /* the text (quotes left out) */
    int quoted;
} Scalar;

typedef struct {
    int kind; /* 0: a scalar; 1: an MX mapping {preference, exchange} */
    Scalar s, pref;
} Value;

typedef struct {
    int rtype;
    Py_ssize_t column; /* the type key's, 1-based */
    int n;
    Value v[MAX_VALUES];
} TypeEntry;

static int
is_safe(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '_' || c == '.' || c == '+' || c == '=' || c == '@' || c == '/' || c == '-';
}

static Py_ssize_t
spaces(const unsigned char *s, Py_ssize_t n, Py_ssize_t i)
{
    while (i < n && s[i] == ' ')
        i++;
    return i;
}

/* A scalar at s[i]; the index after it, or -1. */
static Py_ssize_t
scalar(const unsigned char *s, Py_ssize_t n, Py_ssize_t i, Scalar *out)
{
    if (i >= n)
        return -1;
    unsigned char c = s[i];
    if (c == '"' || c == '\'') {
        Py_ssize_t j = i + 1;
        while (j < n && s[j] != c) {
            unsigned char d = s[j];
            if (d < 0x20 || d > 0x7e || (c == '"' && d == '\\'))
                return -1;
            j++;
        }
        if (j >= n)
            return -1;
        out->at = i + 1;
        out->len = j - i - 1;
        out->quoted = 1;
        return j + 1;
    }
    if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
          c == '_' || c == '.'))
        return -1;
    Py_ssize_t j = i + 1;
    for (;;) {
        while (j < n && is_safe(s[j]))
            j++;
        if (j + 1 < n && s[j] == ' ' && is_safe(s[j + 1])) {
            j += 1;
            continue;
        }
        break;
    }
    out->at = i;
    out->len = j - i;
    out->quoted = 0;
    return j;
}

/* A flow mapping's key (``[A-Za-z][A-Za-z0-9_-]*`` followed by ``:`` and
 * spaces); the index of its value, or -1. */
static Py_ssize_t
flow_key(const unsigned char *s, Py_ssize_t n, Py_ssize_t i, Py_ssize_t *end)
{
    if (i >= n || !((s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= 'a' && s[i] <= 'z')))
        return -1;
    Py_ssize_t j = i + 1;
    while (j < n && ((s[j] >= 'A' && s[j] <= 'Z') || (s[j] >= 'a' && s[j] <= 'z') ||
                     (s[j] >= '0' && s[j] <= '9') || s[j] == '_' || s[j] == '-'))
        j++;
    *end = j;
    if (j + 1 >= n || s[j] != ':' || s[j + 1] != ' ')
        return -1;
    return spaces(s, n, j + 1);
}

static int
key_is(const unsigned char *s, Py_ssize_t i, Py_ssize_t end, const char *word)
{
    size_t len = strlen(word);
    return (size_t)(end - i) == len && memcmp(s + i, word, len) == 0;
}

/* ``{preference: P, exchange: E}`` at s[i] ('{'); the index after it, or -1. */
static Py_ssize_t
mx_map(const unsigned char *s, Py_ssize_t n, Py_ssize_t i, Value *v)
{
    int have_pref = 0, have_exch = 0;
    i = spaces(s, n, i + 1);
    for (;;) {
        Py_ssize_t end, at = flow_key(s, n, i, &end);
        if (at < 0)
            return -1;
        Scalar *into;
        if (key_is(s, i, end, "preference") && !have_pref) {
            have_pref = 1;
            into = &v->pref;
        } else if (key_is(s, i, end, "exchange") && !have_exch) {
            have_exch = 1;
            into = &v->s;
        } else {
            return -1;
        }
        i = scalar(s, n, at, into);
        if (i < 0)
            return -1;
        i = spaces(s, n, i);
        if (i < n && s[i] == '}') {
            if (!have_pref || !have_exch)
                return -1;
            v->kind = 1;
            return i + 1;
        }
        if (i >= n || s[i] != ',')
            return -1;
        i = spaces(s, n, i + 1);
    }
}

/* One type's value (a scalar, a list, or for MX a mapping) at s[i]. */
static Py_ssize_t
type_value(const unsigned char *s, Py_ssize_t n, Py_ssize_t i, TypeEntry *t)
{
    if (i < n && s[i] == '[') {
        i = spaces(s, n, i + 1);
        for (;;) {
            if (t->n == MAX_VALUES)
                return -1;
            Value *v = &t->v[t->n];
            if (i < n && s[i] == '{') {
                if (t->rtype != T_MX)
                    return -1;
                i = mx_map(s, n, i, v);
            } else {
                v->kind = 0;
                i = scalar(s, n, i, &v->s);
            }
            if (i < 0)
                return -1;
            t->n++;
            i = spaces(s, n, i);
            if (i < n && s[i] == ']')
                return i + 1;
            if (i >= n || s[i] != ',')
                return -1;
            i = spaces(s, n, i + 1);
        }
    }
    Value *v = &t->v[0];
    t->n = 1;
    if (i < n && s[i] == '{') {
        if (t->rtype != T_MX)
            return -1;
        return mx_map(s, n, i, v);
    }
    v->kind = 0;
    return scalar(s, n, i, &v->s);
}

static int
type_of(const unsigned char *s, Py_ssize_t i, Py_ssize_t end)
{
    if (key_is(s, i, end, "A"))
        return T_A;
    if (key_is(s, i, end, "AAAA"))
        return T_AAAA;
    if (key_is(s, i, end, "TXT"))
        return T_TXT;
    if (key_is(s, i, end, "MX"))
        return T_MX;
    if (key_is(s, i, end, "NS"))
        return T_NS;
    if (key_is(s, i, end, "CNAME"))
        return T_CNAME;
    if (key_is(s, i, end, "PTR"))
        return T_PTR;
    return 0;
}

/* -- values ------------------------------------------------------------------ */

static int
name_char(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '_' || c == '-' || c == '/';
}

/* A name of plain labels into wire form (relative ones end in ``origin``);
 * its length, or -1.  ``absolute`` tells whether it ended with a dot. */
static Py_ssize_t
name_wire(const unsigned char *t, Py_ssize_t len, const unsigned char *origin,
          Py_ssize_t olen, unsigned char *out, int *absolute)
{
    Py_ssize_t o = 0, i = 0;
    if (len == 0)
        return -1;
    while (i < len) {
        Py_ssize_t j = i;
        while (j < len && name_char(t[j]))
            j++;
        Py_ssize_t l = j - i;
        if (l < 1 || l > 63 || o + 1 + l > 255)
            return -1;
        out[o++] = (unsigned char)l;
        memcpy(out + o, t + i, (size_t)l);
        o += l;
        if (j == len) {
            *absolute = 0;
            if (o + olen > 255)
                return -1;
            memcpy(out + o, origin, (size_t)olen);
            return o + olen;
        }
        if (t[j] != '.')
            return -1;
        if (j + 1 == len) {
            *absolute = 1;
            out[o++] = 0;
            return o;
        }
        i = j + 1;
    }
    return -1;
}

/* The name's text as geodns shows it (names.to_text): its labels, each of
 * name_char only (else -1: the loader shows it), a dot after each. */
static PyObject *
name_text(const unsigned char *w, Py_ssize_t wlen, const char *prefix)
{
    char buf[300 + 16];
    size_t o = strlen(prefix);
    memcpy(buf, prefix, o);
    Py_ssize_t i = 0;
    if (w[0] == 0)
        return NULL;
    while (i < wlen && w[i] != 0) {
        unsigned char l = w[i++];
        for (unsigned char k = 0; k < l; k++) {
            if (!name_char(w[i + k]))
                return NULL;
        }
        memcpy(buf + o, w + i, l);
        o += l;
        buf[o++] = '.';
        i += l;
    }
    return PyUnicode_DecodeASCII(buf, (Py_ssize_t)o, NULL);
}

static PyObject *
lower_bytes(PyObject *b)
{
    const char *s = PyBytes_AS_STRING(b);
    Py_ssize_t n = PyBytes_GET_SIZE(b);
    Py_ssize_t k;
    for (k = 0; k < n; k++) {
        if (s[k] >= 'A' && s[k] <= 'Z')
            break;
    }
    if (k == n)
        return Py_NewRef(b);
    PyObject *out = PyBytes_FromStringAndSize(s, n);
    if (out == NULL)
        return NULL;
    char *d = PyBytes_AS_STRING(out);
    for (; k < n; k++) {
        if (d[k] >= 'A' && d[k] <= 'Z')
            d[k] = (char)(d[k] + 32);
    }
    return out;
}

static PyObject *
make_rdata(PyObject *parts, PyObject *text, PyObject *target)
{
    PyObject *rd = RData_t->tp_alloc(RData_t, 0);
    if (rd == NULL) {
        Py_DECREF(parts);
        Py_DECREF(text);
        Py_XDECREF(target);
        return NULL;
    }
    SLOT(rd, rd_parts) = parts;
    SLOT(rd, rd_text) = text;
    SLOT(rd, rd_target) = target != NULL ? target : Py_NewRef(Py_None);
    return rd;
}

/* A compressible name's bytes (geodns.rdata.CompressibleName). */
static PyObject *
cname_bytes(const unsigned char *w, Py_ssize_t n)
{
    PyObject *b = PyBytes_FromStringAndSize((const char *)w, n);
    if (b == NULL)
        return NULL;
    PyObject *c = PyObject_CallOneArg((PyObject *)CName_t, b);
    Py_DECREF(b);
    return c;
}

static int
is_null_word(const unsigned char *s, const Scalar *v)
{
    if (v->quoted)
        return 0;
    return (v->len == 4 && (memcmp(s + v->at, "null", 4) == 0 ||
                            memcmp(s + v->at, "Null", 4) == 0 ||
                            memcmp(s + v->at, "NULL", 4) == 0));
}

/* Value ``v`` of type ``rtype`` as RDATA (a new reference), its canonical
 * form (DNSSEC's, to find duplicates) in ``canon``; Py_None (a new
 * reference) when it is not certainly valid here; NULL on an error. */
static PyObject *
rdata_of(int rtype, const unsigned char *s, const Value *v, const unsigned char *origin,
         Py_ssize_t olen, unsigned char *canon, Py_ssize_t *clen)
{
    const Scalar *sc = &v->s;
    const unsigned char *t = s + sc->at;
    Py_ssize_t len = sc->len;
    unsigned char w[256 + 2];
    int absolute;

    if (v->kind == 0 && is_null_word(s, sc))
        Py_RETURN_NONE;
    if (rtype == T_A || rtype == T_AAAA) {
        char buf[64], back[64];
        unsigned char packed[16];
        int family = rtype == T_A ? AF_INET : AF_INET6;
        if (len == 0 || len >= (Py_ssize_t)sizeof(buf))
            Py_RETURN_NONE;
        memcpy(buf, t, (size_t)len);
        buf[len] = 0;
        if (rtype == T_AAAA && memchr(buf, '.', (size_t)len) != NULL)
            Py_RETURN_NONE;
        if (inet_pton(family, buf, packed) != 1 ||
            inet_ntop(family, packed, back, sizeof(back)) == NULL || strcmp(buf, back) != 0)
            Py_RETURN_NONE;
        Py_ssize_t plen = rtype == T_A ? 4 : 16;
        memcpy(canon, packed, (size_t)plen);
        *clen = plen;
        PyObject *wire = PyBytes_FromStringAndSize((const char *)packed, plen);
        if (wire == NULL)
            return NULL;
        PyObject *parts = PyTuple_Pack(1, wire);
        Py_DECREF(wire);
        if (parts == NULL)
            return NULL;
        PyObject *text = PyUnicode_DecodeASCII(buf, len, NULL);
        if (text == NULL) {
            Py_DECREF(parts);
            return NULL;
        }
        return make_rdata(parts, text, NULL);
    }
    if (rtype == T_TXT) {
        if (len > MAX_TXT)
            Py_RETURN_NONE;
        Py_ssize_t chunks = len == 0 ? 1 : (len + 254) / 255;
        PyObject *wire = PyBytes_FromStringAndSize(NULL, len + chunks);
        if (wire == NULL)
            return NULL;
        /* the text: each chunk in double quotes, '"' escaped, one space between */
        Py_ssize_t quotes = 0;
        for (Py_ssize_t k = 0; k < len; k++)
            quotes += t[k] == '"';
        PyObject *text = PyUnicode_New(len + quotes + 3 * chunks - 1, 127);
        if (text == NULL) {
            Py_DECREF(wire);
            return NULL;
        }
        unsigned char *d = (unsigned char *)PyBytes_AS_STRING(wire);
        Py_UCS1 *x = PyUnicode_1BYTE_DATA(text);
        Py_ssize_t at = 0;
        for (Py_ssize_t c = 0; c < chunks; c++) {
            Py_ssize_t l = len - at < 255 ? len - at : 255;
            *d++ = (unsigned char)l;
            memcpy(d, t + at, (size_t)l);
            d += l;
            if (c)
                *x++ = ' ';
            *x++ = '"';
            for (Py_ssize_t k = 0; k < l; k++) {
                if (t[at + k] == '"')
                    *x++ = '\\';
                *x++ = t[at + k];
            }
            *x++ = '"';
            at += l;
        }
        Py_ssize_t wl = PyBytes_GET_SIZE(wire);
        if (wl > 256 + 2) {
            *clen = -1; /* compared by the bytes object itself */
        } else {
            memcpy(canon, PyBytes_AS_STRING(wire), (size_t)wl);
            *clen = wl;
        }
        PyObject *parts = PyTuple_Pack(1, wire);
        Py_DECREF(wire);
        if (parts == NULL) {
            Py_DECREF(text);
            return NULL;
        }
        return make_rdata(parts, text, NULL);
    }
    /* names: NS, CNAME, PTR (the value) and MX (the exchange) */
    char prefix[8] = "";
    PyObject *pref_bytes = NULL;
    if (rtype == T_MX) {
        const unsigned char *p;
        Py_ssize_t plen;
        if (v->kind == 1) {
            if (v->pref.quoted || is_null_word(s, &v->s))
                Py_RETURN_NONE;
            p = s + v->pref.at;
            plen = v->pref.len;
        } else {
            /* "PREFERENCE EXCHANGE", one space between */
            Py_ssize_t sp = 0;
            while (sp < len && t[sp] != ' ')
                sp++;
            if (sp == len)
                Py_RETURN_NONE;
            p = t;
            plen = sp;
            t += sp + 1;
            len -= sp + 1;
        }
        if (plen < 1 || plen > 5)
            Py_RETURN_NONE;
        long pref = 0;
        for (Py_ssize_t k = 0; k < plen; k++) {
            if (p[k] < '0' || p[k] > '9')
                Py_RETURN_NONE;
            pref = pref * 10 + (p[k] - '0');
        }
        if (pref > 65535)
            Py_RETURN_NONE;
        snprintf(prefix, sizeof(prefix), "%ld ", pref);
        unsigned char two[2] = {(unsigned char)(pref >> 8), (unsigned char)pref};
        pref_bytes = PyBytes_FromStringAndSize((const char *)two, 2);
        if (pref_bytes == NULL)
            return NULL;
    }
    Py_ssize_t wl = name_wire(t, len, origin, olen, w, &absolute);
    PyObject *text = wl < 0 ? NULL : name_text(w, wl, prefix);
    if (text == NULL) {
        Py_XDECREF(pref_bytes);
        if (PyErr_Occurred())
            return NULL;
        Py_RETURN_NONE;
    }
    PyObject *name = cname_bytes(w, wl);
    PyObject *target = name == NULL ? NULL : lower_bytes(name);
    PyObject *parts = NULL;
    if (target != NULL) {
        /* (the target a plain bytes object, as bytes.lower() gives) */
        if (Py_TYPE(target) != &PyBytes_Type) {
            Py_SETREF(target, PyBytes_FromStringAndSize(PyBytes_AS_STRING(name), wl));
        }
    }
    if (target != NULL)
        parts = pref_bytes != NULL ? PyTuple_Pack(2, pref_bytes, name) : PyTuple_Pack(1, name);
    Py_XDECREF(pref_bytes);
    Py_XDECREF(name);
    if (parts == NULL) {
        Py_DECREF(text);
        Py_XDECREF(target);
        return NULL;
    }
    Py_ssize_t c = 0;
    if (rtype == T_MX) {
        canon[c++] = PyBytes_AS_STRING(PyTuple_GET_ITEM(parts, 0))[0];
        canon[c++] = PyBytes_AS_STRING(PyTuple_GET_ITEM(parts, 0))[1];
    }
    memcpy(canon + c, PyBytes_AS_STRING(target), (size_t)wl);
    *clen = c + wl;
    return make_rdata(parts, text, target);
}

/* -- one entry ---------------------------------------------------------------- */

static PyObject *
where_new(PyObject *file, PyObject *line, Py_ssize_t column)
{
    PyObject *col = PyLong_FromSsize_t(column);
    if (col == NULL)
        return NULL;
    PyObject *w = Where_t->tp_alloc(Where_t, 3);
    if (w == NULL) {
        Py_DECREF(col);
        return NULL;
    }
    PyTuple_SET_ITEM(w, 0, Py_NewRef(file));
    PyTuple_SET_ITEM(w, 1, Py_NewRef(line));
    PyTuple_SET_ITEM(w, 2, col);
    return w;
}

typedef struct {
    const unsigned char *origin;
    Py_ssize_t olen;
    PyObject *ttl, *file;
} Zone;

/* The entry on line ``number`` (text s[0:n]): (owner lower-cased, {type:
 * RRset}), Py_None when it is not read here, NULL on an error. */
static PyObject *
entry(const Zone *z, const unsigned char *s, Py_ssize_t n, long number)
{
    static TypeEntry types[MAX_TYPES];
    int ntypes = 0;
    Py_ssize_t i = spaces(s, n, 0);
    Py_ssize_t key = i;
    if (i >= n || !((s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= 'a' && s[i] <= 'z') ||
                    (s[i] >= '0' && s[i] <= '9') || s[i] == '_'))
        Py_RETURN_NONE;
    while (i < n && (name_char(s[i]) || s[i] == '.'))
        i++;
    Py_ssize_t key_end = i;
    if (i + 1 >= n || s[i] != ':' || s[i + 1] != ' ')
        Py_RETURN_NONE;
    i = spaces(s, n, i + 1);
    if (i >= n || s[i] != '{')
        Py_RETURN_NONE;
    i = spaces(s, n, i + 1);
    for (;;) {
        Py_ssize_t end, at = flow_key(s, n, i, &end);
        if (at < 0 || ntypes == MAX_TYPES)
            Py_RETURN_NONE;
        TypeEntry *t = &types[ntypes];
        t->rtype = type_of(s, i, end);
        if (t->rtype == 0)
            Py_RETURN_NONE;
        for (int k = 0; k < ntypes; k++) {
            if (types[k].rtype == t->rtype)
                Py_RETURN_NONE;
        }
        t->column = i + 1;
        t->n = 0;
        i = type_value(s, n, at, t);
        if (i < 0)
            Py_RETURN_NONE;
        if (t->rtype == T_CNAME && t->n > 1)
            Py_RETURN_NONE;
        ntypes++;
        i = spaces(s, n, i);
        if (i < n && s[i] == '}')
            break;
        if (i >= n || s[i] != ',')
            Py_RETURN_NONE;
        i = spaces(s, n, i + 1);
    }
    if (spaces(s, n, i + 1) != n)
        Py_RETURN_NONE;

    /* the owner: relative, of plain labels */
    unsigned char ow[256 + 2];
    int absolute;
    Py_ssize_t owl = name_wire(s + key, key_end - key, z->origin, z->olen, ow, &absolute);
    if (owl < 0 || absolute)
        Py_RETURN_NONE;

    /* every value first: nothing is made for an entry left to the loader */
    static unsigned char canon[MAX_VALUES][256 + 4];
    static Py_ssize_t clen[MAX_VALUES];
    PyObject *node = PyDict_New();
    PyObject *owner = NULL, *low = NULL, *line = NULL;
    if (node == NULL)
        return NULL;
    owner = PyBytes_FromStringAndSize((const char *)ow, owl);
    if (owner == NULL)
        goto error;
    low = lower_bytes(owner);
    if (low == NULL)
        goto error;
    line = PyLong_FromLong(number);
    if (line == NULL)
        goto error;
    for (int k = 0; k < ntypes; k++) {
        TypeEntry *t = &types[k];
        PyObject *rdatas = PyTuple_New(t->n);
        if (rdatas == NULL)
            goto error;
        for (int j = 0; j < t->n; j++) {
            PyObject *rd = rdata_of(t->rtype, s, &t->v[j], z->origin, z->olen, canon[j],
                                    &clen[j]);
            if (rd == NULL) {
                Py_DECREF(rdatas);
                goto error;
            }
            PyTuple_SET_ITEM(rdatas, j, rd);
            if (rd == Py_None)
                goto not_here_rdatas;
            for (int m = 0; m < j; m++) {
                int same;
                if (clen[j] < 0 || clen[m] < 0) {
                    /* a long TXT: its wire form is its canonical form */
                    same = PyObject_RichCompareBool(
                        PyTuple_GET_ITEM(SLOT(rd, rd_parts), 0),
                        PyTuple_GET_ITEM(SLOT(PyTuple_GET_ITEM(rdatas, m), rd_parts), 0), Py_EQ);
                    if (same < 0) {
                        Py_DECREF(rdatas);
                        goto error;
                    }
                } else {
                    same = clen[j] == clen[m] && memcmp(canon[j], canon[m], (size_t)clen[j]) == 0;
                }
                if (same)
                    goto not_here_rdatas; /* a duplicate: the loader says so */
            }
        }
        PyObject *rtype = PyLong_FromLong(t->rtype);
        PyObject *where = rtype == NULL ? NULL : where_new(z->file, line, t->column);
        PyObject *rr = where == NULL ? NULL : RRset_t->tp_alloc(RRset_t, 0);
        if (rr == NULL) {
            Py_XDECREF(rtype);
            Py_XDECREF(where);
            Py_DECREF(rdatas);
            goto error;
        }
        SLOT(rr, rr_owner) = Py_NewRef(owner);
        SLOT(rr, rr_rtype) = Py_NewRef(rtype);
        SLOT(rr, rr_ttl) = Py_NewRef(z->ttl);
        SLOT(rr, rr_rdatas) = rdatas;
        SLOT(rr, rr_where) = where;
        int failed = PyDict_SetItem(node, rtype, rr);
        Py_DECREF(rtype);
        Py_DECREF(rr);
        if (failed)
            goto error;
        continue;
    not_here_rdatas:
        Py_DECREF(rdatas);
        Py_DECREF(node);
        Py_DECREF(owner);
        Py_DECREF(low);
        Py_DECREF(line);
        Py_RETURN_NONE;
    }
    Py_DECREF(owner);
    Py_DECREF(line);
    PyObject *out = PyTuple_Pack(2, low, node);
    Py_DECREF(low);
    Py_DECREF(node);
    return out;
error:
    Py_XDECREF(node);
    Py_XDECREF(owner);
    Py_XDECREF(low);
    Py_XDECREF(line);
    return NULL;
}

/* Whether line ``s`` is blank or a comment (lines after an entry's own). */
static int
blank(PyObject *line)
{
    if (!PyUnicode_Check(line))
        return 0;
    Py_ssize_t n = PyUnicode_GET_LENGTH(line);
    int kind = PyUnicode_KIND(line);
    const void *d = PyUnicode_DATA(line);
    Py_ssize_t i = 0;
    while (i < n && PyUnicode_READ(kind, d, i) == ' ')
        i++;
    return i == n || PyUnicode_READ(kind, d, i) == '#';
}

static PyObject *
entries(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    if (nargs != 7) {
        PyErr_SetString(PyExc_TypeError,
                        "entries(lines, starts, lo, hi, origin, ttl, file)");
        return NULL;
    }
    PyObject *lines = args[0], *starts = args[1];
    if (RData_t == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "setup() first");
        return NULL;
    }
    if (!PyList_Check(lines) || !PyList_Check(starts) || !PyBytes_Check(args[4]) ||
        !PyLong_Check(args[5]) || !PyUnicode_Check(args[6])) {
        PyErr_SetString(PyExc_TypeError, "entries(list, list, int, int, bytes, int, str)");
        return NULL;
    }
    Py_ssize_t lo = PyLong_AsSsize_t(args[2]), hi = PyLong_AsSsize_t(args[3]);
    if ((lo == -1 || hi == -1) && PyErr_Occurred())
        return NULL;
    Py_ssize_t nlines = PyList_GET_SIZE(lines), nstarts = PyList_GET_SIZE(starts);
    if (lo < 0 || hi < lo || hi + 1 > nstarts) {
        PyErr_SetString(PyExc_IndexError, "entries: lo and hi out of range");
        return NULL;
    }
    Zone z;
    z.origin = (const unsigned char *)PyBytes_AS_STRING(args[4]);
    z.olen = PyBytes_GET_SIZE(args[4]);
    z.ttl = args[5];
    z.file = args[6];
    if (z.olen < 1 || z.olen > 255 || z.origin[z.olen - 1] != 0) {
        PyErr_SetString(PyExc_ValueError, "entries: origin is not a wire name");
        return NULL;
    }
    PyObject *out = PyList_New(hi - lo);
    if (out == NULL)
        return NULL;
    for (Py_ssize_t e = lo; e < hi; e++) {
        long first = PyLong_AsLong(PyList_GET_ITEM(starts, e));
        long after = PyLong_AsLong(PyList_GET_ITEM(starts, e + 1));
        if ((first == -1 || after == -1) && PyErr_Occurred())
            goto error;
        PyObject *got = NULL;
        if (first < 1 || after <= first || first > nlines || after - 1 > nlines + 1) {
            got = Py_NewRef(Py_None);
        } else {
            int ok = 1;
            for (long k = first; k < after - 1 && ok; k++)
                ok = k < nlines && blank(PyList_GET_ITEM(lines, k));
            PyObject *line = PyList_GET_ITEM(lines, first - 1);
            if (!ok || !PyUnicode_Check(line) || !PyUnicode_IS_ASCII(line))
                got = Py_NewRef(Py_None);
            else
                got = entry(&z, PyUnicode_1BYTE_DATA(line), PyUnicode_GET_LENGTH(line), first);
        }
        if (got == NULL)
            goto error;
        PyList_SET_ITEM(out, e - lo, got);
    }
    return out;
error:
    Py_DECREF(out);
    return NULL;
}

static PyMethodDef methods[] = {
    {"setup", setup, METH_VARARGS,
     "setup(RData, RRset, Where, CompressibleName): the zone model's classes."},
    {"entries", (PyCFunction)(void (*)(void))entries, METH_FASTCALL,
     "entries(lines, starts, lo, hi, origin, ttl, file) -> list: for entries lo..hi-1 of "
     "records (entry i on lines starts[i]..starts[i+1]-1, 1-based), (owner lower-cased, "
     "{type: RRset}) when read here, else None."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "geodns._zonetext",
    "The usual entries of a zone's records read in C (see geodns/_zonetext.c).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__zonetext(void)
{
    return PyModule_Create(&module);
}
