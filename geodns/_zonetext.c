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
 * And the compiler's counterpart (own(), below): a usual name's node and
 * its answers, each its own records after the question, made as
 * geodns/compile.py's own path makes them (tests/test_compile_own.py).
 *
 * Optional, like geodns/_udpbatch.c: without it the loader reads every
 * entry in Python, and the compiler makes every answer in Python.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <arpa/inet.h>
#include <string.h>

/* The classes the zone model is made of (set by setup()), and where their
 * slots are: the objects are made here as their own constructors make them. */
static PyTypeObject *Parts_t, *Wire_t, *RRset_t, *CName_t, *One_t, *Packed_t;
static Py_ssize_t rd_parts, rd_target;
static Py_ssize_t rr_owner, rr_rtype, rr_ttl, rr_rdatas, rr_where;
static Py_ssize_t one_rrset, pk_owner, pk_body;

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
    PyTypeObject *rd, *wire, *rr, *cn, *one, *pk;
    if (!PyArg_ParseTuple(args, "O!O!O!O!O!O!", &PyType_Type, &rd, &PyType_Type, &wire,
                          &PyType_Type, &rr, &PyType_Type, &cn, &PyType_Type, &one,
                          &PyType_Type, &pk))
        return NULL;
    if (!PyType_IsSubtype(cn, &PyBytes_Type) || !PyType_IsSubtype(wire, &PyBytes_Type)) {
        PyErr_SetString(PyExc_TypeError, "the name and Wire must be bytes types");
        return NULL;
    }
    if (find_slot(rd, "parts", &rd_parts) || find_slot(rd, "target", &rd_target) ||
        find_slot(rr, "owner", &rr_owner) ||
        find_slot(rr, "rtype", &rr_rtype) || find_slot(rr, "ttl", &rr_ttl) ||
        find_slot(rr, "rdatas", &rr_rdatas) || find_slot(rr, "where", &rr_where) ||
        find_slot(one, "rrset", &one_rrset) || find_slot(pk, "owner", &pk_owner) ||
        find_slot(pk, "body", &pk_body))
        return NULL;
    Py_XSETREF(Parts_t, (PyTypeObject *)Py_NewRef(rd));
    Py_XSETREF(Wire_t, (PyTypeObject *)Py_NewRef(wire));
    Py_XSETREF(RRset_t, (PyTypeObject *)Py_NewRef(rr));
    Py_XSETREF(CName_t, (PyTypeObject *)Py_NewRef(cn));
    Py_XSETREF(One_t, (PyTypeObject *)Py_NewRef(one));
    Py_XSETREF(Packed_t, (PyTypeObject *)Py_NewRef(pk));
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

static const struct {
    const char *key;
    int type;
} TYPE_KEYS[] = {
    {"A", T_A}, {"AAAA", T_AAAA}, {"TXT", T_TXT}, {"MX", T_MX},
    {"NS", T_NS}, {"CNAME", T_CNAME}, {"PTR", T_PTR},
};

/* The type a key names, of those read here; 0 for any other. */
static int
type_of(const unsigned char *s, Py_ssize_t i, Py_ssize_t end)
{
    size_t k;
    for (k = 0; k < sizeof TYPE_KEYS / sizeof TYPE_KEYS[0]; k++)
        if (key_is(s, i, end, TYPE_KEYS[k].key))
            return TYPE_KEYS[k].type;
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

/* Whether a name is one read here: not the root, each label of name_char
 * only (else the loader reads it, and says what is wrong). */
static int
plain_name(const unsigned char *w, Py_ssize_t wlen)
{
    Py_ssize_t i = 0;
    if (w[0] == 0)
        return 0;
    while (i < wlen && w[i] != 0) {
        unsigned char l = w[i++];
        for (unsigned char k = 0; k < l; k++) {
            if (!name_char(w[i + k]))
                return 0;
        }
        i += l;
    }
    return 1;
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

/* The RDATA of a record without a name inside: its bytes as a rdata.Wire
 * (stealing the reference to ``wire``). */
static PyObject *
as_wire(PyObject *wire)
{
    PyObject *w = PyObject_CallOneArg((PyObject *)Wire_t, wire);
    Py_DECREF(wire);
    return w;
}

static PyObject *
make_rdata(PyObject *parts, PyObject *target)
{
    PyObject *rd = Parts_t->tp_alloc(Parts_t, 0);
    if (rd == NULL) {
        Py_DECREF(parts);
        Py_XDECREF(target);
        return NULL;
    }
    SLOT(rd, rd_parts) = parts;
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
        return wire == NULL ? NULL : as_wire(wire);
    }
    if (rtype == T_TXT) {
        if (len > MAX_TXT)
            Py_RETURN_NONE;
        Py_ssize_t chunks = len == 0 ? 1 : (len + 254) / 255;
        PyObject *wire = PyBytes_FromStringAndSize(NULL, len + chunks);
        if (wire == NULL)
            return NULL;
        unsigned char *d = (unsigned char *)PyBytes_AS_STRING(wire);
        Py_ssize_t at = 0;
        for (Py_ssize_t c = 0; c < chunks; c++) {
            Py_ssize_t l = len - at < 255 ? len - at : 255;
            *d++ = (unsigned char)l;
            memcpy(d, t + at, (size_t)l);
            d += l;
            at += l;
        }
        Py_ssize_t wl = PyBytes_GET_SIZE(wire);
        if (wl > 256 + 2) {
            *clen = -1; /* compared by the bytes object itself */
        } else {
            memcpy(canon, PyBytes_AS_STRING(wire), (size_t)wl);
            *clen = wl;
        }
        return as_wire(wire);
    }
    /* names: NS, CNAME, PTR (the value) and MX (the exchange) */
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
        unsigned char two[2] = {(unsigned char)(pref >> 8), (unsigned char)pref};
        pref_bytes = PyBytes_FromStringAndSize((const char *)two, 2);
        if (pref_bytes == NULL)
            return NULL;
    }
    Py_ssize_t wl = name_wire(t, len, origin, olen, w, &absolute);
    if (wl < 0 || !plain_name(w, wl)) {
        Py_XDECREF(pref_bytes);
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
    return make_rdata(parts, target);
}

static PyObject *own_body(PyObject *rrset, PyObject *name, PyObject *origin, int *as_written);
static int packable(PyObject *rrset, PyObject *name);

/* A model.Packed of ``owner`` and ``body`` (stealing the reference to body). */
static PyObject *
new_packed(PyObject *owner, PyObject *body)
{
    PyObject *pk = Packed_t->tp_alloc(Packed_t, 0);
    if (pk == NULL) {
        Py_DECREF(body);
        return NULL;
    }
    SLOT(pk, pk_owner) = Py_NewRef(owner);
    SLOT(pk, pk_body) = body;
    return pk;
}

/* The record set of an entry just read (owner ``low``, no position) as a
 * model.Packed: the body its own answer has (own_body: C0 0C, type, class
 * IN, TTL, RDATA length, RDATA, for each), which the compiler answers with
 * as it is.  Only when packable() (records with no name inside, or one MX,
 * NS or PTR record) and that answer holds it as written: no name written as
 * a pointer into the question, nothing added from the zone (own_body makes
 * no answer for an in-zone target).  A new reference to Py_None when not,
 * NULL on an error. */
static PyObject *
packed_of(PyObject *rr, PyObject *low, PyObject *origin)
{
    int ok = packable(rr, low);
    if (ok <= 0)
        return ok < 0 ? NULL : Py_NewRef(Py_None);
    int as_written = 0;
    PyObject *body = own_body(rr, low, origin, &as_written);
    if (body == NULL || body == Py_None || as_written)
        return body == NULL || body == Py_None ? body : new_packed(low, body);
    Py_DECREF(body);
    Py_RETURN_NONE;
}

/* -- one entry ---------------------------------------------------------------- */

typedef struct {
    const unsigned char *origin;
    Py_ssize_t olen;
    PyObject *ttl, *origin_obj;
} Zone;

/* What reading one entry needs, allocated once per entries() call (not
 * static: another thread may read another zone meanwhile, should the
 * interpreter switch threads inside an allocation). */
typedef struct {
    TypeEntry types[MAX_TYPES];
    unsigned char canon[MAX_VALUES][256 + 4];
    Py_ssize_t clen[MAX_VALUES];
} Work;

/* The entry on a line (text s[0:n]): (owner lower-cased, its record sets:
 * a model.One, or a dict {type: RRset} for more than one), Py_None when it
 * is not read here, NULL on an error.  No position is kept with a record
 * set: checks.where_of finds it in the zone's source when asked. */
static PyObject *
entry(const Zone *z, Work *work, const unsigned char *s, Py_ssize_t n)
{
    TypeEntry *types = work->types;
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
    unsigned char (*canon)[256 + 4] = work->canon;
    Py_ssize_t *clen = work->clen;
    PyObject *node = PyDict_New();
    PyObject *owner = NULL, *low = NULL;
    if (node == NULL)
        return NULL;
    owner = PyBytes_FromStringAndSize((const char *)ow, owl);
    if (owner == NULL)
        goto error;
    low = lower_bytes(owner);
    if (low == NULL)
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
                    same = PyObject_RichCompareBool(rd, PyTuple_GET_ITEM(rdatas, m), Py_EQ);
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
        PyObject *rr = rtype == NULL ? NULL : RRset_t->tp_alloc(RRset_t, 0);
        if (rr == NULL) {
            Py_XDECREF(rtype);
            Py_DECREF(rdatas);
            goto error;
        }
        SLOT(rr, rr_owner) = Py_NewRef(owner);
        SLOT(rr, rr_rtype) = Py_NewRef(rtype);
        SLOT(rr, rr_ttl) = Py_NewRef(z->ttl);
        SLOT(rr, rr_rdatas) = rdatas;
        SLOT(rr, rr_where) = Py_NewRef(Py_None);
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
        Py_RETURN_NONE;
    }
    Py_DECREF(owner);
    if (PyDict_GET_SIZE(node) == 1) {
        /* the usual name: its one record set, as the loader keeps it (a
         * model.Packed when it can be, else a model.One) */
        Py_ssize_t pos = 0;
        PyObject *k, *rr;
        PyDict_Next(node, &pos, &k, &rr);
        PyObject *one = packed_of(rr, low, z->origin_obj);
        if (one == Py_None) {
            Py_DECREF(one);
            one = One_t->tp_alloc(One_t, 0);
            if (one != NULL)
                SLOT(one, one_rrset) = Py_NewRef(rr);
        }
        if (one == NULL) {
            Py_DECREF(node);
            Py_DECREF(low);
            return NULL;
        }
        Py_SETREF(node, one);
    }
    PyObject *out = PyTuple_Pack(2, low, node);
    Py_DECREF(low);
    Py_DECREF(node);
    return out;
error:
    Py_XDECREF(node);
    Py_XDECREF(owner);
    Py_XDECREF(low);
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
    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError,
                        "entries(lines, starts, lo, hi, origin, ttl)");
        return NULL;
    }
    PyObject *lines = args[0], *starts = args[1];
    if (Parts_t == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "setup() first");
        return NULL;
    }
    if (!PyList_Check(lines) || !PyList_Check(starts) || !PyBytes_Check(args[4]) ||
        !PyLong_Check(args[5])) {
        PyErr_SetString(PyExc_TypeError, "entries(list, list, int, int, bytes, int)");
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
    z.origin_obj = args[4];
    z.origin = (const unsigned char *)PyBytes_AS_STRING(args[4]);
    z.olen = PyBytes_GET_SIZE(args[4]);
    z.ttl = args[5];
    if (z.olen < 1 || z.olen > 255 || z.origin[z.olen - 1] != 0) {
        PyErr_SetString(PyExc_ValueError, "entries: origin is not a wire name");
        return NULL;
    }
    Work *work = PyMem_Malloc(sizeof(Work));
    if (work == NULL)
        return PyErr_NoMemory();
    PyObject *out = PyList_New(hi - lo);
    if (out == NULL) {
        PyMem_Free(work);
        return NULL;
    }
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
                got = entry(&z, work, PyUnicode_1BYTE_DATA(line), PyUnicode_GET_LENGTH(line));
        }
        if (got == NULL)
            goto error;
        PyList_SET_ITEM(out, e - lo, got);
    }
    PyMem_Free(work);
    return out;
error:
    PyMem_Free(work);
    Py_DECREF(out);
    return NULL;
}

/* -- a usual name's own answers (geodns/compile.py, _compile_zone) ------------ */

static PyTypeObject *Answer_t;
static Py_ssize_t an_aa, an_cid, an_heads, an_kind, an_rcode, an_signed, an_smaller, an_tails,
    an_zone;

static PyObject *
setup_compile(PyObject *self, PyObject *args)
{
    (void)self;
    PyTypeObject *an;
    if (!PyArg_ParseTuple(args, "O!", &PyType_Type, &an))
        return NULL;
    if (find_slot(an, "aa", &an_aa) || find_slot(an, "cid", &an_cid) ||
        find_slot(an, "heads", &an_heads) || find_slot(an, "kind", &an_kind) ||
        find_slot(an, "rcode", &an_rcode) || find_slot(an, "signed", &an_signed) ||
        find_slot(an, "smaller", &an_smaller) || find_slot(an, "tails", &an_tails) ||
        find_slot(an, "zone", &an_zone))
        return NULL;
    Py_XSETREF(Answer_t, (PyTypeObject *)Py_NewRef(an));
    Py_RETURN_NONE;
}

/* The context own() is given, one tuple per zone (geodns/compile.py). */
enum {
    C_ZONE_NODES, C_NODES, C_EXACT, C_USUAL, C_USUAL_NODE, C_ORIGIN,
    C_ZNAME, C_CID, C_RCODE, C_KIND, C_OPT, C_OPT_DO, C_HEADS, C_HEADS_OF, C_SLOW, C_COUNT
};

static int
is_subdomain(const unsigned char *n, Py_ssize_t nl, const unsigned char *a, Py_ssize_t al)
{
    if (al == 1 && a[0] == 0)
        return 1;
    if (nl < al || memcmp(n + nl - al, a, (size_t)al) != 0)
        return 0;
    Py_ssize_t cut = nl - al, i = 0;
    while (i < cut)
        i += n[i] + 1;
    return i == cut;
}

/* A name in the first record after the question ``q``, as the encoder
 * writes it (compile._pointing), appended at ``out``; its length. */
static Py_ssize_t
pointing(const unsigned char *w, Py_ssize_t wl, const unsigned char *q, Py_ssize_t ql,
         unsigned char *out)
{
    unsigned char low[256];
    if (wl > 255)
        return -1;
    for (Py_ssize_t k = 0; k < wl; k++)
        low[k] = (w[k] >= 'A' && w[k] <= 'Z') ? (unsigned char)(w[k] + 32) : w[k];
    Py_ssize_t i = 0;
    while (i < wl && w[i]) {
        Py_ssize_t tl = wl - i;
        if (tl <= ql && memcmp(q + ql - tl, low + i, (size_t)tl) == 0) {
            Py_ssize_t at = ql - tl, j = 0;
            while (j < at)
                j += q[j] + 1;
            if (j == at) {
                memcpy(out, w, (size_t)i);
                unsigned v = 0xC000 | (unsigned)(12 + at);
                out[i] = (unsigned char)(v >> 8);
                out[i + 1] = (unsigned char)v;
                return i + 2;
            }
        }
        i += w[i] + 1;
    }
    memcpy(out, w, (size_t)wl);
    return wl;
}

#define ADDS_FOR(t) ((t) == 2 || (t) == 15 || (t) == 33 || (t) == 64 || (t) == 65)

/* The answer of one record set (compile._own_answer), or a new reference
 * to Py_None when it is not made here; NULL on an error.  *as_written: 0
 * when a name in it was written as a pointer into the question. */
static PyObject *
own_body(PyObject *rrset, PyObject *name, PyObject *origin, int *as_written)
{
    *as_written = 1;
    PyObject *rtype_o = SLOT(rrset, rr_rtype), *ttl_o = SLOT(rrset, rr_ttl);
    PyObject *rdatas = SLOT(rrset, rr_rdatas);
    if (!PyTuple_Check(rdatas) || !PyLong_Check(rtype_o) || !PyLong_Check(ttl_o))
        Py_RETURN_NONE;
    long rtype = PyLong_AsLong(rtype_o);
    unsigned long ttl = PyLong_AsUnsignedLong(ttl_o);
    if (PyErr_Occurred()) {
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    if (rtype < 0 || rtype > 65535 || ttl > 0xFFFFFFFFUL)
        Py_RETURN_NONE;
    Py_ssize_t n = PyTuple_GET_SIZE(rdatas);
    if (n == 0)
        Py_RETURN_NONE;
    const unsigned char *org = (const unsigned char *)PyBytes_AS_STRING(origin);
    Py_ssize_t orl = PyBytes_GET_SIZE(origin);
    /* first the sizes and whether it is made here */
    Py_ssize_t size = 0;
    for (Py_ssize_t r = 0; r < n; r++) {
        PyObject *rd = PyTuple_GET_ITEM(rdatas, r);
        if (Py_TYPE(rd) == Wire_t) {  /* no name inside: its bytes */
            size += 12 + PyBytes_GET_SIZE(rd);
            continue;
        }
        if (Py_TYPE(rd) != Parts_t)
            Py_RETURN_NONE;
        PyObject *target = SLOT(rd, rd_target), *parts = SLOT(rd, rd_parts);
        if (ADDS_FOR(rtype) && target != Py_None) {
            if (!PyBytes_Check(target))
                Py_RETURN_NONE;
            if (is_subdomain((const unsigned char *)PyBytes_AS_STRING(target),
                             PyBytes_GET_SIZE(target), org, orl))
                Py_RETURN_NONE; /* its addresses may go in the additional section */
        }
        if (!PyTuple_Check(parts))
            Py_RETURN_NONE;
        Py_ssize_t np = PyTuple_GET_SIZE(parts);
        size += 12;
        for (Py_ssize_t k = 0; k < np; k++) {
            PyObject *p = PyTuple_GET_ITEM(parts, k);
            if (!PyBytes_Check(p))
                Py_RETURN_NONE;
            if (PyObject_TypeCheck(p, CName_t) && (n > 1 || k != np - 1))
                Py_RETURN_NONE; /* names the encoder may compress: in Python */
            size += PyBytes_GET_SIZE(p);
        }
    }
    PyObject *body = PyBytes_FromStringAndSize(NULL, size);
    if (body == NULL)
        return NULL;
    unsigned char *d = (unsigned char *)PyBytes_AS_STRING(body);
    const unsigned char *q = (const unsigned char *)PyBytes_AS_STRING(name);
    Py_ssize_t ql = PyBytes_GET_SIZE(name);
    Py_ssize_t o = 0;
    for (Py_ssize_t r = 0; r < n; r++) {
        PyObject *rd = PyTuple_GET_ITEM(rdatas, r);
        int whole = Py_TYPE(rd) == Wire_t; /* one part: itself */
        PyObject *parts = whole ? NULL : SLOT(rd, rd_parts);
        Py_ssize_t np = whole ? 1 : PyTuple_GET_SIZE(parts);
        d[o++] = 0xC0;
        d[o++] = 0x0C;
        d[o++] = (unsigned char)(rtype >> 8);
        d[o++] = (unsigned char)rtype;
        d[o++] = 0;
        d[o++] = 1;
        d[o++] = (unsigned char)(ttl >> 24);
        d[o++] = (unsigned char)(ttl >> 16);
        d[o++] = (unsigned char)(ttl >> 8);
        d[o++] = (unsigned char)ttl;
        Py_ssize_t len_at = o;
        o += 2;
        for (Py_ssize_t k = 0; k < np; k++) {
            PyObject *p = whole ? rd : PyTuple_GET_ITEM(parts, k);
            const unsigned char *pb = (const unsigned char *)PyBytes_AS_STRING(p);
            Py_ssize_t pl = PyBytes_GET_SIZE(p);
            if (PyObject_TypeCheck(p, CName_t)) {
                Py_ssize_t wrote = pointing(pb, pl, q, ql, d + o);
                if (wrote < 0) {
                    Py_DECREF(body);
                    Py_RETURN_NONE;
                }
                if (wrote != pl)
                    *as_written = 0; /* (a pointer is always shorter than what it stands for) */
                o += wrote;
            } else {
                memcpy(d + o, pb, (size_t)pl);
                o += pl;
            }
        }
        Py_ssize_t rdlen = o - len_at - 2;
        if (rdlen > 65535) {
            Py_DECREF(body);
            Py_RETURN_NONE;
        }
        d[len_at] = (unsigned char)(rdlen >> 8);
        d[len_at + 1] = (unsigned char)rdlen;
    }
    if (o != size && _PyBytes_Resize(&body, o) < 0)
        return NULL;
    return body;
}

/* How many records a model.Packed's body holds. */
static Py_ssize_t
records_in(PyObject *body)
{
    const unsigned char *b = (const unsigned char *)PyBytes_AS_STRING(body);
    Py_ssize_t n = PyBytes_GET_SIZE(body), at = 0, count = 0;
    while (at + 12 <= n) {
        at += 12 + (((Py_ssize_t)b[at + 10] << 8) | b[at + 11]);
        count++;
    }
    return count;
}

/* model.packable, for a record set whose answer wrote every name as it is
 * written: it keeps no position, its owner is the name as kept, and its
 * records have no name inside, or it is one record of a type that ends in
 * one name (model._NAMED) made as model.Packed reads it back (1, 0, or -1
 * on an error). */
static int
packable(PyObject *rrset, PyObject *name)
{
    if (SLOT(rrset, rr_where) != Py_None)
        return 0;
    PyObject *owner = SLOT(rrset, rr_owner);
    if (owner != name) {
        int same = PyObject_RichCompareBool(owner, name, Py_EQ);
        if (same <= 0)
            return same;
    }
    PyObject *rdatas = SLOT(rrset, rr_rdatas);
    if (!PyTuple_Check(rdatas) || PyTuple_GET_SIZE(rdatas) == 0)
        return 0;
    int wire = 1;
    for (Py_ssize_t r = 0; r < PyTuple_GET_SIZE(rdatas); r++)
        wire &= Py_TYPE(PyTuple_GET_ITEM(rdatas, r)) == Wire_t;
    if (wire)
        return 1;
    long rtype = PyLong_AsLong(SLOT(rrset, rr_rtype));
    Py_ssize_t before = rtype == T_MX ? 2 : (rtype == T_NS || rtype == T_PTR) ? 0 : -1;
    PyObject *rd = PyTuple_GET_ITEM(rdatas, 0);
    if (before < 0 || PyTuple_GET_SIZE(rdatas) != 1 || Py_TYPE(rd) != Parts_t)
        return PyErr_Occurred() ? -1 : 0;
    PyObject *parts = SLOT(rd, rd_parts), *target = SLOT(rd, rd_target);
    if (!PyTuple_Check(parts) || PyTuple_GET_SIZE(parts) != (before ? 2 : 1) ||
        !PyBytes_CheckExact(target))
        return 0;
    if (before && (!PyBytes_CheckExact(PyTuple_GET_ITEM(parts, 0)) ||
                   PyBytes_GET_SIZE(PyTuple_GET_ITEM(parts, 0)) != before))
        return 0;
    PyObject *last = PyTuple_GET_ITEM(parts, PyTuple_GET_SIZE(parts) - 1);
    if (Py_TYPE(last) != CName_t || PyBytes_GET_SIZE(last) != PyBytes_GET_SIZE(target))
        return 0;
    const char *a = PyBytes_AS_STRING(last), *b = PyBytes_AS_STRING(target);
    for (Py_ssize_t i = 0; i < PyBytes_GET_SIZE(last); i++) {
        char c = a[i] >= 'A' && a[i] <= 'Z' ? (char)(a[i] + 32) : a[i];
        if (c != b[i])
            return 0; /* (the target is the name lower-cased, as bytes.lower() gives) */
    }
    return 1;
}

/* The name's record set kept as the body of its own answer (model.Packed),
 * in place of its model.One; -1 on an error. */
static int
pack_into(PyObject *zone_nodes, PyObject *name, PyObject *body)
{
    PyObject *pk = new_packed(name, Py_NewRef(body));
    if (pk == NULL)
        return -1;
    int failed = PyDict_SetItem(zone_nodes, name, pk);
    Py_DECREF(pk);
    return failed;
}

/* own(context, name) -> bool: the usual name's node and answers made and
 * put in the tables, as compile._compile_zone's own path makes them; False
 * (nothing done) when the name is not a usual one. */
static PyObject *
own(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    if (nargs != 2 || !PyTuple_Check(args[0]) || PyTuple_GET_SIZE(args[0]) != C_COUNT ||
        !PyBytes_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "own(context, name)");
        return NULL;
    }
    if (Answer_t == NULL || Parts_t == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "setup() and setup_compile() first");
        return NULL;
    }
    PyObject *ctx = args[0], *name = args[1];
#define CTX(i) PyTuple_GET_ITEM(ctx, i)
    PyObject *zone_nodes = CTX(C_ZONE_NODES), *origin = CTX(C_ORIGIN);
    if (!PyDict_Check(zone_nodes) || !PyDict_Check(CTX(C_NODES)) ||
        !PyDict_Check(CTX(C_EXACT)) || !PyDict_Check(CTX(C_USUAL)) ||
        !PyBytes_Check(origin) || !PyDict_Check(CTX(C_HEADS)) || !PyBytes_Check(CTX(C_OPT)) ||
        !PyBytes_Check(CTX(C_OPT_DO))) {
        PyErr_SetString(PyExc_TypeError, "own: a bad context");
        return NULL;
    }
    PyObject *data = PyDict_GetItemWithError(zone_nodes, name);
    if (data == NULL) {
        if (PyErr_Occurred())
            return NULL;
        Py_RETURN_FALSE; /* an empty non-terminal */
    }
    /* its record sets: a dict, or its only one (a model.One), or that one
     * kept as its own answer's body (a model.Packed: the answer is that) */
    PyObject *only = NULL, *packed = NULL;
    long packed_type = 0;
    int has;
    if (Py_TYPE(data) == Packed_t) {
        packed = SLOT(data, pk_body);
        if (!PyBytes_CheckExact(packed) || PyBytes_GET_SIZE(packed) < 12)
            Py_RETURN_FALSE;
        const unsigned char *b = (const unsigned char *)PyBytes_AS_STRING(packed);
        packed_type = ((long)b[2] << 8) | b[3];
        has = packed_type == T_CNAME;
    } else if (Py_TYPE(data) == One_t) {
        only = SLOT(data, one_rrset);
        if (Py_TYPE(only) != RRset_t)
            Py_RETURN_FALSE;
        has = PyLong_AsLong(SLOT(only, rr_rtype)) == T_CNAME;
        if (PyErr_Occurred())
            return NULL;
    } else {
        if (!PyDict_Check(data) || PyDict_GET_SIZE(data) == 0)
            Py_RETURN_FALSE;
        PyObject *cname = PyLong_FromLong(T_CNAME);
        if (cname == NULL)
            return NULL;
        has = PyDict_Contains(data, cname);
        Py_DECREF(cname);
        if (has < 0)
            return NULL;
    }
    if (has)
        Py_RETURN_FALSE;
    has = PyObject_RichCompareBool(name, origin, Py_EQ);
    if (has < 0)
        return NULL;
    if (has)
        Py_RETURN_FALSE; /* the apex */
    {
        Py_ssize_t nl = PyBytes_GET_SIZE(name);
        PyObject *wild = PyBytes_FromStringAndSize(NULL, nl + 2);
        if (wild == NULL)
            return NULL;
        PyBytes_AS_STRING(wild)[0] = 1;
        PyBytes_AS_STRING(wild)[1] = '*';
        memcpy(PyBytes_AS_STRING(wild) + 2, PyBytes_AS_STRING(name), (size_t)nl);
        has = PyDict_Contains(zone_nodes, wild);
        Py_DECREF(wild);
        if (has < 0)
            return NULL;
        if (has)
            Py_RETURN_FALSE;
    }
    /* the types, in _prebuilt's order (a set's) */
    PyObject *built;
    if (packed != NULL) {
        PyObject *rt = PyLong_FromLong(packed_type);
        built = rt == NULL ? NULL : PyTuple_Pack(1, rt);
        Py_XDECREF(rt);
    } else if (only != NULL) {
        built = PyTuple_Pack(1, SLOT(only, rr_rtype));
    } else if (PyDict_GET_SIZE(data) == 1) {
        built = PySequence_Tuple(data);
    } else {
        PyObject *set = PySet_New(data);
        built = set == NULL ? NULL : PySequence_Tuple(set);
        Py_XDECREF(set);
    }
    if (built == NULL)
        return NULL;
    /* the node the usual names with these types share (made by compile's
     * usual_node the first time), put in first, as _compile_zone does */
    PyObject *node = PyDict_GetItemWithError(CTX(C_USUAL), built);
    if (node != NULL)
        Py_INCREF(node);
    else if (!PyErr_Occurred())
        node = PyObject_CallOneArg(CTX(C_USUAL_NODE), built);
    if (node == NULL) {
        Py_DECREF(built);
        return NULL;
    }
    int failed = PyDict_SetItem(CTX(C_NODES), name, node);
    Py_DECREF(node);
    if (failed) {
        Py_DECREF(built);
        return NULL;
    }
    Py_ssize_t nl = PyBytes_GET_SIZE(name);
    for (Py_ssize_t t = 0; t < PyTuple_GET_SIZE(built); t++) {
        PyObject *rtype = PyTuple_GET_ITEM(built, t);
        PyObject *rrset = only != NULL ? only : packed != NULL ? data
                                                                : PyDict_GetItemWithError(data, rtype);
        long rt = PyLong_AsLong(rtype);
        if (rrset == NULL || (rt == -1 && PyErr_Occurred()) || rt < 0 || rt > 65535) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_ValueError, "own: a bad record type");
            Py_DECREF(built);
            return NULL;
        }
        PyObject *ans = NULL;
        int as_written = 0;
        PyObject *body = packed != NULL ? Py_NewRef(packed)
                         : Py_TYPE(rrset) == RRset_t ? own_body(rrset, name, origin, &as_written)
                                                     : Py_NewRef(Py_None);
        PyObject *made = body != Py_None ? body : NULL; /* (borrowed, kept by the answer) */
        if (body == NULL) {
            Py_DECREF(built);
            return NULL;
        }
        if (body == Py_None) {
            Py_DECREF(body);
            ans = PyObject_CallFunctionObjArgs(CTX(C_SLOW), name, rtype, NULL);
        } else {
            Py_ssize_t an = packed != NULL ? records_in(packed)
                                           : PyTuple_GET_SIZE(SLOT(rrset, rr_rdatas));
            PyObject *an_o = PyLong_FromSsize_t(an);
            PyObject *heads = an_o == NULL ? NULL : PyDict_GetItemWithError(CTX(C_HEADS), an_o);
            if (heads != NULL)
                Py_INCREF(heads);
            else if (an_o != NULL && !PyErr_Occurred())
                heads = PyObject_CallOneArg(CTX(C_HEADS_OF), an_o);
            Py_XDECREF(an_o);
            /* (body, opt, do_body, do_opt), the OPTs shared (compile.Tails) */
            PyObject *tails = heads == NULL ? NULL
                : PyTuple_Pack(4, body, CTX(C_OPT), body, CTX(C_OPT_DO));
            Py_DECREF(body);
            ans = tails == NULL ? NULL : Answer_t->tp_alloc(Answer_t, 0);
            if (ans == NULL) {
                Py_XDECREF(tails);
                Py_XDECREF(heads);
            } else {
                SLOT(ans, an_rcode) = Py_NewRef(CTX(C_RCODE));
                SLOT(ans, an_aa) = Py_NewRef(Py_True);
                SLOT(ans, an_kind) = Py_NewRef(CTX(C_KIND));
                SLOT(ans, an_zone) = Py_NewRef(CTX(C_ZNAME));
                SLOT(ans, an_cid) = Py_NewRef(CTX(C_CID));
                SLOT(ans, an_smaller) = Py_NewRef(Py_None);
                SLOT(ans, an_heads) = heads;
                SLOT(ans, an_tails) = tails;
                SLOT(ans, an_signed) = Py_NewRef(Py_None);
            }
        }
        if (ans == NULL) {
            Py_DECREF(built);
            return NULL;
        }
        /* its key: the name, the type and class IN */
        PyObject *key = PyBytes_FromStringAndSize(NULL, nl + 4);
        if (key == NULL) {
            Py_DECREF(ans);
            Py_DECREF(built);
            return NULL;
        }
        unsigned char *k = (unsigned char *)PyBytes_AS_STRING(key);
        memcpy(k, PyBytes_AS_STRING(name), (size_t)nl);
        k[nl] = (unsigned char)(rt >> 8);
        k[nl + 1] = (unsigned char)rt;
        k[nl + 2] = 0;
        k[nl + 3] = 1;
        failed = PyDict_SetItem(CTX(C_EXACT), key, ans);
        Py_DECREF(key);
        Py_DECREF(ans);
        if (failed) {
            Py_DECREF(built);
            return NULL;
        }
        if (only != NULL && made != NULL && as_written) {
            int pack = packable(only, name);
            if (pack < 0 || (pack && pack_into(zone_nodes, name, made) < 0)) {
                Py_DECREF(built);
                return NULL;
            }
        }
    }
    Py_DECREF(built);
    Py_RETURN_TRUE;
#undef CTX
}

static PyMethodDef methods[] = {
    {"setup", setup, METH_VARARGS,
     "setup(Parts, Wire, RRset, CompressibleName, One, Packed): the zone model's classes."},
    {"entries", (PyCFunction)(void (*)(void))entries, METH_FASTCALL,
     "entries(lines, starts, lo, hi, origin, ttl) -> list: for entries lo..hi-1 of "
     "records (entry i on lines starts[i]..starts[i+1]-1, 1-based), (owner lower-cased, "
     "its record sets: a One or a {type: RRset}) when read here, else None."},
    {"setup_compile", setup_compile, METH_VARARGS,
     "setup_compile(Answer): the compiled tables' classes."},
    {"own", (PyCFunction)(void (*)(void))own, METH_FASTCALL,
     "own(context, name) -> bool: a usual name's node and own answers put in the tables "
     "(geodns/compile.py); False when the name is not a usual one."},
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
