/*
 * The search tree of a MaxMind DB file (format 2.0), walked in C for the
 * compiled steering maps (geodns/steermap.py): every leaf in address order,
 * neighbours that point at the same data record merged.  A City database
 * has some 3.5 million leaves; walking them in Python took tens of seconds.
 *
 * Written from the public format description: the tree is node_count nodes
 * of two records (left: bit 0, right: bit 1) of 24, 28 or 32 bits each,
 * big-endian; in a 28-bit node the middle byte's high nibble belongs to the
 * left record.  A record below node_count is a node, node_count itself is
 * "no data", and above it a pointer into the data section.
 *
 * Optional, like geodns/_udpbatch.c: without it geodns/steermap.py walks
 * the tree in Python.  The walk runs without the GIL.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* A bytes object holding a copy of ``n`` bytes: the copy (and the page
 * faults of a fresh large block) made without the GIL, so that the event
 * loop's thread is not held up by a build's large results. */
static PyObject *
copy_out(const void *src, size_t n)
{
    PyObject *b = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)n);
    if (b == NULL)
        return NULL;
    char *dst = PyBytes_AS_STRING(b);
    Py_BEGIN_ALLOW_THREADS
    memcpy(dst, src, n);
    Py_END_ALLOW_THREADS
    return b;
}

typedef struct {
    uint32_t node;
    uint32_t depth;
    uint64_t hi, lo; /* the path so far, right-aligned (128 bits) */
} Frame;

typedef struct {
    unsigned char *starts; /* 4 (IPv4) or 16 (IPv6, big-endian) bytes each */
    int64_t *records;
    size_t n, cap, width;
} Out;

static int
out_push(Out *o, uint64_t hi, uint64_t lo, int64_t record)
{
    if (o->n && o->records[o->n - 1] == record)
        return 0; /* the same record as the range before: merged */
    if (o->n == o->cap) {
        size_t cap = o->cap ? o->cap * 2 : 65536;
        unsigned char *s = realloc(o->starts, cap * o->width);
        if (s == NULL)
            return -1;
        o->starts = s;
        int64_t *r = realloc(o->records, cap * sizeof(int64_t));
        if (r == NULL)
            return -1;
        o->records = r;
        o->cap = cap;
    }
    unsigned char *p = o->starts + o->n * o->width;
    if (o->width == 4) {
        uint32_t v = (uint32_t)lo;
        memcpy(p, &v, 4); /* native order: read back as array('I') */
    } else {
        for (int i = 0; i < 8; i++) {
            p[i] = (unsigned char)(hi >> (56 - 8 * i));
            p[8 + i] = (unsigned char)(lo >> (56 - 8 * i));
        }
    }
    o->records[o->n++] = record;
    return 0;
}

static inline void
children(const unsigned char *t, int size, uint32_t node, uint32_t *l, uint32_t *r)
{
    const unsigned char *p;
    switch (size) {
    case 24:
        p = t + (size_t)node * 6;
        *l = ((uint32_t)p[0] << 16) | ((uint32_t)p[1] << 8) | p[2];
        *r = ((uint32_t)p[3] << 16) | ((uint32_t)p[4] << 8) | p[5];
        break;
    case 28:
        p = t + (size_t)node * 7;
        *l = ((uint32_t)(p[3] & 0xF0) << 20) | ((uint32_t)p[0] << 16) | ((uint32_t)p[1] << 8)
             | p[2];
        *r = ((uint32_t)(p[3] & 0x0F) << 24) | ((uint32_t)p[4] << 16) | ((uint32_t)p[5] << 8)
             | p[6];
        break;
    default:
        p = t + (size_t)node * 8;
        *l = ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
        *r = ((uint32_t)p[4] << 24) | ((uint32_t)p[5] << 16) | ((uint32_t)p[6] << 8) | p[7];
    }
}

static void
shift_left(uint64_t *hi, uint64_t *lo, unsigned n)
{
    if (n == 0)
        return;
    if (n >= 128) {
        *hi = *lo = 0;
    } else if (n >= 64) {
        *hi = *lo << (n - 64);
        *lo = 0;
    } else {
        *hi = (*hi << n) | (*lo >> (64 - n));
        *lo <<= n;
    }
}

/* 0: done; -1: out of memory; -2: a malformed tree. */
static int
do_walk(const unsigned char *t, uint32_t node_count, int size, uint32_t root, unsigned bits,
        int64_t alias_root, Out *o)
{
    Frame stack[260];
    int top = 0;
    stack[top++] = (Frame){root, 0, 0, 0};
    while (top) {
        Frame f = stack[--top];
        if (f.node >= node_count || ((int64_t)f.node == alias_root && f.depth > 0)) {
            uint64_t hi = f.hi, lo = f.lo;
            shift_left(&hi, &lo, bits - f.depth);
            int64_t record;
            if ((int64_t)f.node == alias_root && f.node < node_count)
                record = -1 - (int64_t)(bits - f.depth - 32); /* where its IPv4 part sits */
            else
                record = f.node == node_count ? 0 : (int64_t)f.node;
            if (out_push(o, hi, lo, record) < 0)
                return -1;
            continue;
        }
        if (f.depth >= bits || top + 2 > (int)(sizeof stack / sizeof stack[0]))
            return -2;
        uint32_t l, r;
        children(t, size, f.node, &l, &r);
        uint64_t hi = (f.hi << 1) | (f.lo >> 63), lo = f.lo << 1;
        stack[top++] = (Frame){r, f.depth + 1, hi, lo | 1};
        stack[top++] = (Frame){l, f.depth + 1, hi, lo};
    }
    return 0;
}

PyDoc_STRVAR(walk_doc,
"walk(tree, node_count, record_size, root, bits, alias_root) -> (starts, records)\n\n"
"Every leaf below node ``root`` of a MaxMind DB search tree (``tree``: its\n"
"node_count * record_size / 4 bytes) in address order, neighbours with the\n"
"same record merged.  ``starts``: 4 bytes a range (native order) when bits is\n"
"32, else 16 (big-endian).  ``records``: int64 a range (native order): the\n"
"record (above node_count: data), 0 for no data, or, for node ``alias_root``\n"
"reached again below the root (the IPv4 subtree's aliases in an IPv6 tree),\n"
"-1 - the bits below its IPv4 part.");

static PyObject *
walk(PyObject *Py_UNUSED(self), PyObject *args)
{
    Py_buffer tree;
    unsigned long node_count, root;
    int size;
    unsigned int bits;
    long long alias_root;
    if (!PyArg_ParseTuple(args, "y*kikIL", &tree, &node_count, &size, &root, &bits,
                          &alias_root))
        return NULL;
    if ((size != 24 && size != 28 && size != 32) || (bits != 32 && bits != 128)
        || node_count > 0xFFFFFFFFul || root >= node_count
        || (size_t)tree.len < (size_t)node_count * (size_t)size / 4) {
        PyBuffer_Release(&tree);
        PyErr_SetString(PyExc_ValueError, "not a MaxMind DB search tree");
        return NULL;
    }
    Out o = {NULL, NULL, 0, 0, bits == 32 ? 4 : 16};
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = do_walk(tree.buf, (uint32_t)node_count, size, (uint32_t)root, bits, alias_root, &o);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&tree);
    PyObject *result = NULL;
    if (rc == -1)
        PyErr_NoMemory();
    else if (rc == -2)
        PyErr_SetString(PyExc_ValueError, "a MaxMind DB search tree deeper than its addresses");
    else {
        PyObject *a = copy_out(o.starts, o.n * o.width);
        PyObject *b = a ? copy_out(o.records, o.n * sizeof(int64_t)) : NULL;
        if (b)
            result = PyTuple_Pack(2, a, b);
        Py_XDECREF(a);
        Py_XDECREF(b);
    }
    free(o.starts);
    free(o.records);
    return result;
}

PyDoc_STRVAR(changes_doc,
"changes(values) -> bytes\n\n"
"The indexes (uint32, native order) where a buffer of int32 values differs\n"
"from the value before it; index 0 always.");

static PyObject *
changes(PyObject *Py_UNUSED(self), PyObject *arg)
{
    Py_buffer b;
    if (PyObject_GetBuffer(arg, &b, PyBUF_SIMPLE) < 0)
        return NULL;
    size_t n = (size_t)b.len / 4;
    uint32_t *out = malloc((n ? n : 1) * 4);
    if (out == NULL) {
        PyBuffer_Release(&b);
        return PyErr_NoMemory();
    }
    size_t m = 0;
    Py_BEGIN_ALLOW_THREADS
    const int32_t *v = b.buf;
    for (size_t i = 0; i < n; i++)
        if (i == 0 || v[i] != v[i - 1])
            out[m++] = (uint32_t)i;
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&b);
    PyObject *result = copy_out(out, m * 4);
    free(out);
    return result;
}


/* -- the data section: only what a Place needs (geodns.geo._place_from_record) -- */
typedef struct {
    const unsigned char *b;
    size_t len;
} Data;

/* The value at *pos: its type and size, *pos moved to its payload.  -1: malformed. */
static int
ctrl(const Data *d, size_t *pos, int *type, size_t *size)
{
    if (*pos >= d->len)
        return -1;
    unsigned c = d->b[(*pos)++];
    int t = c >> 5;
    if (t == 1) { /* a pointer: size bits are its own */
        unsigned ss = (c >> 3) & 3, v = c & 7;
        size_t need = ss + 1;
        if (*pos + need > d->len)
            return -1;
        const unsigned char *p = d->b + *pos;
        size_t off;
        if (ss == 0)
            off = ((size_t)v << 8) | p[0];
        else if (ss == 1)
            off = (((size_t)v << 16) | ((size_t)p[0] << 8) | p[1]) + 2048;
        else if (ss == 2)
            off = (((size_t)v << 24) | ((size_t)p[0] << 16) | ((size_t)p[1] << 8) | p[2])
                  + 526336;
        else
            off = ((size_t)p[0] << 24) | ((size_t)p[1] << 16) | ((size_t)p[2] << 8) | p[3];
        *pos += need;
        *type = 1;
        *size = off;
        return 0;
    }
    if (t == 0) {
        if (*pos >= d->len)
            return -1;
        t = 7 + d->b[(*pos)++];
    }
    size_t s = c & 31;
    if (s >= 29) {
        size_t k = s - 28, v = 0;
        if (*pos + k > d->len)
            return -1;
        for (size_t i = 0; i < k; i++)
            v = (v << 8) | d->b[*pos + i];
        *pos += k;
        s = s == 29 ? 29 + v : s == 30 ? 285 + v : 65821 + v;
    }
    *type = t;
    *size = s;
    return 0;
}

/* Follow a pointer (never to another pointer): the value's type and size,
 * *pos at its payload; *after: where the next value after the original one starts. */
static int
resolve(const Data *d, size_t *pos, int *type, size_t *size, size_t *after)
{
    if (ctrl(d, pos, type, size) < 0)
        return -1;
    *after = 0;
    if (*type == 1) {
        *after = *pos;
        *pos = *size;
        if (ctrl(d, pos, type, size) < 0 || *type == 1)
            return -1;
    }
    return 0;
}

static int skip(const Data *d, size_t *pos, int depth);

static int
skip_payload(const Data *d, size_t *pos, int type, size_t size, int depth)
{
    if (depth > 64)
        return -1;
    switch (type) {
    case 7: /* map */
        for (size_t i = 0; i < 2 * size; i++)
            if (skip(d, pos, depth + 1) < 0)
                return -1;
        return 0;
    case 11: /* array */
        for (size_t i = 0; i < size; i++)
            if (skip(d, pos, depth + 1) < 0)
                return -1;
        return 0;
    case 14: /* boolean: the size is the value */
        return 0;
    case 3: /* double */
        size = 8;
        break;
    case 15: /* float */
        size = 4;
        break;
    default:
        break;
    }
    if (*pos + size > d->len)
        return -1;
    *pos += size;
    return 0;
}

static int
skip(const Data *d, size_t *pos, int depth)
{
    int type;
    size_t size;
    if (ctrl(d, pos, &type, &size) < 0)
        return -1;
    if (type == 1)
        return 0; /* a pointer's bytes are all read */
    return skip_payload(d, pos, type, size, depth);
}

/* In the map at *pos (resolved), the value of key ``key``: 1 and *pos at it,
 * 0 when absent, -1 when malformed.  *pairs: the map's size. */
static int
find(const Data *d, size_t *pos, const char *key, size_t *pairs)
{
    int type;
    size_t size, after;
    size_t p = *pos;
    if (resolve(d, &p, &type, &size, &after) < 0)
        return -1;
    if (pairs)
        *pairs = type == 7 ? size : 0;
    if (type != 7)
        return 0;
    size_t klen = strlen(key);
    for (size_t i = 0; i < size; i++) {
        int kt;
        size_t ks, kafter, kp = p;
        if (resolve(d, &kp, &kt, &ks, &kafter) < 0 || kt != 2 || kp + ks > d->len)
            return -1;
        int hit = ks == klen && memcmp(d->b + kp, key, klen) == 0;
        p = kafter ? kafter : kp + ks;
        if (hit) {
            *pos = p;
            return 1;
        }
        if (skip(d, &p, 0) < 0)
            return -1;
    }
    return 0;
}

/* The string or double at pos as a Python object (None for another type). */
static PyObject *
scalar(const Data *d, size_t pos, int want)
{
    int type;
    size_t size, after;
    if (resolve(d, &pos, &type, &size, &after) < 0)
        return NULL;
    if (want == 2 && type == 2 && pos + size <= d->len)
        return PyUnicode_DecodeUTF8((const char *)d->b + pos, (Py_ssize_t)size, NULL);
    if (want == 3 && type == 3 && size == 8 && pos + 8 <= d->len) {
        uint64_t u = 0;
        for (int i = 0; i < 8; i++)
            u = (u << 8) | d->b[pos + i];
        double x;
        memcpy(&x, &u, 8);
        return PyFloat_FromDouble(x);
    }
    if (want == 3 && type == 15 && size == 4 && pos + 4 <= d->len) {
        uint32_t u = 0;
        for (int i = 0; i < 4; i++)
            u = (u << 8) | d->b[pos + i];
        float x;
        memcpy(&x, &u, 4);
        return PyFloat_FromDouble((double)x);
    }
    Py_RETURN_NONE;
}

/* record[outer][inner] (a string or double), None where absent. */
static PyObject *
field(const Data *d, size_t pos, const char *outer, const char *inner, int want,
      size_t *pairs)
{
    int r = find(d, &pos, outer, NULL);
    if (r < 0)
        return NULL;
    if (r == 0) {
        if (pairs)
            *pairs = 0;
        Py_RETURN_NONE;
    }
    r = find(d, &pos, inner, pairs);
    if (r < 0)
        return NULL;
    if (r == 0)
        Py_RETURN_NONE;
    return scalar(d, pos, want);
}

static PyObject *
place(const Data *d, size_t pos)
{
    int type;
    size_t size, after, p = pos;
    if (resolve(d, &p, &type, &size, &after) < 0)
        return NULL;
    if (type != 7)
        return Py_BuildValue("(OOOOO)", Py_None, Py_None, Py_None, Py_None, Py_None);
    PyObject *lat = NULL, *lon = NULL, *continent = NULL, *country = NULL, *sub = NULL;
    size_t pairs = 0;
    lat = field(d, pos, "location", "latitude", 3, NULL);
    if (lat)
        lon = field(d, pos, "location", "longitude", 3, NULL);
    if (lon)
        continent = field(d, pos, "continent", "code", 2, NULL);
    if (continent)
        country = field(d, pos, "country", "iso_code", 2, &pairs);
    if (country && pairs == 0) { /* no country (or an empty one): the registered country */
        Py_DECREF(country);
        country = field(d, pos, "registered_country", "iso_code", 2, NULL);
    }
    if (country) {
        size_t sp = pos;
        int r = find(d, &sp, "subdivisions", NULL);
        if (r < 0) {
            sub = NULL;
        } else if (r == 0) {
            sub = Py_NewRef(Py_None);
        } else {
            int at;
            size_t as, aafter;
            if (resolve(d, &sp, &at, &as, &aafter) < 0)
                sub = NULL;
            else if (at != 11 || as == 0)
                sub = Py_NewRef(Py_None);
            else {
                size_t ip = sp;
                int rr = find(d, &ip, "iso_code", NULL);
                sub = rr < 0 ? NULL : rr == 0 ? Py_NewRef(Py_None) : scalar(d, ip, 2);
            }
        }
    }
    PyObject *result = NULL;
    if (sub)
        result = PyTuple_Pack(5, lat, lon, continent, country, sub);
    else if (!PyErr_Occurred())
        PyErr_SetString(PyExc_ValueError, "a malformed MaxMind DB data record");
    Py_XDECREF(lat);
    Py_XDECREF(lon);
    Py_XDECREF(continent);
    Py_XDECREF(country);
    Py_XDECREF(sub);
    return result;
}

PyDoc_STRVAR(places_doc,
"places(data, offsets) -> list[tuple]\n\n"
"For each offset (int64, native order) into a MaxMind DB data section, what\n"
"geodns.geo makes a Place of: (latitude, longitude, continent code, country\n"
"iso_code (else the registered country's), first subdivision's iso_code),\n"
"None where absent.  Only those fields are read.");

static PyObject *
places(PyObject *Py_UNUSED(self), PyObject *args)
{
    Py_buffer data, offs;
    if (!PyArg_ParseTuple(args, "y*y*", &data, &offs))
        return NULL;
    Data d = {data.buf, (size_t)data.len};
    size_t n = (size_t)offs.len / sizeof(int64_t);
    PyObject *list = PyList_New((Py_ssize_t)n);
    for (size_t i = 0; list && i < n; i++) {
        int64_t o;
        memcpy(&o, (const char *)offs.buf + i * sizeof o, sizeof o);
        PyObject *t = o < 0 || (size_t)o >= d.len ? NULL : place(&d, (size_t)o);
        if (t == NULL) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_ValueError, "a data record outside the data section");
            Py_CLEAR(list);
            break;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)i, t);
    }
    PyBuffer_Release(&data);
    PyBuffer_Release(&offs);
    return list;
}

PyDoc_STRVAR(lookup_doc,
"lookup(values, known, mapped) -> bytes\n\n"
"For each int64 in ``values``: ``mapped[j]`` (int32) where ``known[j]`` (int64,\n"
"sorted) is that value; a value of 0 or below is kept as it is (int32).\n"
"ValueError for a value not in ``known``.");

static PyObject *
lookup(PyObject *Py_UNUSED(self), PyObject *args)
{
    Py_buffer v, k, m;
    if (!PyArg_ParseTuple(args, "y*y*y*", &v, &k, &m))
        return NULL;
    size_t n = (size_t)v.len / 8, nk = (size_t)k.len / 8;
    PyObject *result = NULL;
    int32_t *out = malloc((n ? n : 1) * 4);
    int bad = 0;
    if ((size_t)m.len / 4 < nk) {
        bad = 1;
    } else if (out != NULL) {
        Py_BEGIN_ALLOW_THREADS
        const int64_t *vals = v.buf, *keys = k.buf;
        const int32_t *map = m.buf;
        for (size_t i = 0; i < n && !bad; i++) {
            int64_t x = vals[i];
            if (x <= 0) {
                out[i] = (int32_t)x;
                continue;
            }
            size_t lo = 0, hi = nk;
            while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;
                if (keys[mid] < x)
                    lo = mid + 1;
                else
                    hi = mid;
            }
            if (lo == nk || keys[lo] != x)
                bad = 1;
            else
                out[i] = map[lo];
        }
        Py_END_ALLOW_THREADS
    }
    if (out == NULL)
        PyErr_NoMemory();
    else if (bad)
        PyErr_SetString(PyExc_ValueError, "a value that is not known");
    else
        result = copy_out(out, n * 4);
    free(out);
    PyBuffer_Release(&v);
    PyBuffer_Release(&k);
    PyBuffer_Release(&m);
    return result;
}

PyDoc_STRVAR(gather_doc,
"gather(index, table) -> bytes\n\n"
"For each int32 in ``index``: ``table[i]`` (int32) when it is 0 or above,\n"
"else the value itself.");

static PyObject *
gather(PyObject *Py_UNUSED(self), PyObject *args)
{
    Py_buffer ix, t;
    if (!PyArg_ParseTuple(args, "y*y*", &ix, &t))
        return NULL;
    size_t n = (size_t)ix.len / 4, nt = (size_t)t.len / 4;
    int32_t *out = malloc((n ? n : 1) * 4);
    int bad = 0;
    if (out != NULL) {
        Py_BEGIN_ALLOW_THREADS
        const int32_t *idx = ix.buf, *tab = t.buf;
        for (size_t i = 0; i < n; i++) {
            int32_t x = idx[i];
            if (x < 0)
                out[i] = x;
            else if ((size_t)x < nt)
                out[i] = tab[x];
            else
                bad = 1;
        }
        Py_END_ALLOW_THREADS
    }
    PyObject *result = NULL;
    if (out == NULL)
        PyErr_NoMemory();
    else if (bad)
        PyErr_SetString(PyExc_IndexError, "an index beyond the table");
    else
        result = copy_out(out, n * 4);
    free(out);
    PyBuffer_Release(&ix);
    PyBuffer_Release(&t);
    return result;
}

PyDoc_STRVAR(pick_doc,
"pick(items, width, at) -> bytes\n\n"
"The ``width``-byte items of ``items`` at the indexes ``at`` (uint32), in order.");

static PyObject *
pick(PyObject *Py_UNUSED(self), PyObject *args)
{
    Py_buffer it, at;
    Py_ssize_t width;
    if (!PyArg_ParseTuple(args, "y*ny*", &it, &width, &at))
        return NULL;
    size_t n = (size_t)at.len / 4, ni = width > 0 ? (size_t)it.len / (size_t)width : 0;
    PyObject *result = NULL;
    if (width <= 0) {
        PyErr_SetString(PyExc_ValueError, "width must be positive");
    } else if ((result = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(n * (size_t)width)))) {
        char *out = PyBytes_AS_STRING(result);
        const uint32_t *ix = at.buf;
        int bad = 0;
        Py_BEGIN_ALLOW_THREADS
        for (size_t i = 0; i < n; i++) {
            if (ix[i] >= ni) {
                bad = 1;
                break;
            }
            memcpy(out + i * (size_t)width, (const char *)it.buf + (size_t)ix[i] * (size_t)width,
                   (size_t)width);
        }
        Py_END_ALLOW_THREADS
        if (bad) {
            Py_CLEAR(result);
            PyErr_SetString(PyExc_IndexError, "an index beyond the items");
        }
    }
    PyBuffer_Release(&it);
    PyBuffer_Release(&at);
    return result;
}

static int
cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

PyDoc_STRVAR(distinct_doc,
"distinct(a, b) -> bytes\n\n"
"The distinct values above 0 of two int64 buffers, sorted (int64, native order).");

static PyObject *
distinct(PyObject *Py_UNUSED(self), PyObject *args)
{
    Py_buffer a, b;
    if (!PyArg_ParseTuple(args, "y*y*", &a, &b))
        return NULL;
    size_t na = (size_t)a.len / 8, nb = (size_t)b.len / 8, m = 0;
    int64_t *all = malloc((na + nb + 1) * 8);
    if (all != NULL) {
        Py_BEGIN_ALLOW_THREADS
        const int64_t *pa = a.buf, *pb = b.buf;
        for (size_t i = 0; i < na; i++)
            if (pa[i] > 0)
                all[m++] = pa[i];
        for (size_t i = 0; i < nb; i++)
            if (pb[i] > 0)
                all[m++] = pb[i];
        qsort(all, m, 8, cmp_i64);
        size_t u = 0;
        for (size_t i = 0; i < m; i++)
            if (u == 0 || all[u - 1] != all[i])
                all[u++] = all[i];
        m = u;
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&a);
    PyBuffer_Release(&b);
    if (all == NULL)
        return PyErr_NoMemory();
    PyObject *result = copy_out(all, m * 8);
    free(all);
    return result;
}

static PyMethodDef methods[] = {
    {"walk", walk, METH_VARARGS, walk_doc},
    {"changes", changes, METH_O, changes_doc},
    {"places", places, METH_VARARGS, places_doc},
    {"lookup", lookup, METH_VARARGS, lookup_doc},
    {"gather", gather, METH_VARARGS, gather_doc},
    {"pick", pick, METH_VARARGS, pick_doc},
    {"distinct", distinct, METH_VARARGS, distinct_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "geodns._mmdbtree",
    .m_doc = "A MaxMind DB search tree's leaves in address order (geodns.steermap).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC
PyInit__mmdbtree(void)
{
    return PyModule_Create(&module);
}
