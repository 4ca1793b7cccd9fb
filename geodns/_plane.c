/*
 * The UDP data plane's common case in C, part of geodns._udpbatch.
 *
 * Plane.serve(fd, counts, fallback) reads up to BATCH datagrams with one
 * recvmmsg(2), answers in C each query it can answer exactly as
 * geodns.wire.Responder.respond would (the same bytes), hands the others
 * to ``fallback`` (Python: DatagramHandler.answer_all) in one list, and
 * sends every answer with one sendmmsg(2).  No Python object is made for
 * a query answered here.  Plane.run does that batch after batch for the
 * socket's reader thread (geodns.server.transport.UDPPlaneThread), each
 * read waiting in recvmmsg without the GIL.
 *
 * What is answered here: the fused fast path's shape (one question, no
 * records, at most one OPT with at most a Client Subnet option), for a
 * name, type and class found in the snapshot's exact table, whose entry is
 *   - an Answer (static), with or without a Client Subnet option (echoed
 *     with scope 0), with DO its signed form when that is an Answer; or
 *     for a name below a closest encloser (Node.below: NXDOMAIN, or the
 *     referral below a cut; not a wildcard's synthesis) that answer, with DO
 *     the proof its zone keeps for the name's cover (a Proof's Finder); or
 *   - a Steered entry the plane has *learnt*: the Python steer stage,
 *     having decided an answer from a compiled steering map (geodns.steermap)
 *     with one decision, no penalty and no fallback, tells the plane
 *     (learn) that every client whose map ranking is the same order of PoPs
 *     gets the same answer under this health view.  The plane then finds the
 *     client's order in the map (SteerRanges: binary searches in flat
 *     arrays) and the answer learnt for it; the Client Subnet scope is the
 *     widest prefix inside the run of ranges with that order, as
 *     SteerMap.scope_at computes it.  Health changes forget what was learnt.
 * Everything else (a name that exists without the type, a wildcard, a
 * malformed or unusual packet, an answer that must be cut to fit, a proof
 * or an outcome not made yet)
 * goes to Python, which answers it as before (and may teach the plane).
 *
 * Counters: every answer here is counted under the same key as Python's
 * fast path counts it (geodns.counters: label number | query-type slot << 1
 * | udp), added into the responder's ``counts`` dict once per batch.
 */
#define PY_SSIZE_T_CLEAN
#define _GNU_SOURCE
#include <Python.h>
#include <structmember.h>
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <poll.h>
#include <sys/socket.h>

#include "_udpbatch.h"

#define OTHER_SLOT 0x10000 /* geodns.counters.OTHER */
#define MIN_UDP 512
#define MAX_COUNTED 16     /* distinct counter keys gathered per batch */

/* -- SteerRanges: one compiled map's arrays ------------------------------------ */

/* Each sorted array of starts has an index by the top 16 bits of an
 * address: the search for a's range runs from idx[a >> (bits - 16)] to the
 * next bucket's entry (a few entries, nearby in memory, instead of some 22
 * steps across the whole array: they were a fifth of a query's CPU). */
#define INDEX_BITS 16
#define INDEX_SIZE ((1 << INDEX_BITS) + 1)

typedef struct {
    Py_buffer starts;  /* v4: uint32 (native); v6: 16-byte big-endian */
    Py_buffer keys;    /* int32: a ranking number, or (v6) an alias marker < 0 */
    Py_buffer runs;    /* the same layout as starts */
    uint32_t *starts_idx, *runs_idx;
    Py_ssize_t n, nruns;
    int32_t *over;     /* sorted (range index, ranking number) pairs */
    Py_ssize_t nover;
    int bits;
} Family;

typedef struct {
    PyObject_HEAD
    Family v4, v6;
    Py_buffer table;   /* int32: ranking number -> order number */
    Py_ssize_t ntable;
    int ready;
} SteerRanges;

typedef unsigned __int128 u128;

static u128
load128(const unsigned char *p)
{
    u128 x = 0;
    int i;
    for (i = 0; i < 16; i++)
        x = (x << 8) | p[i];
    return x;
}

static int
bit_length(u128 x)
{
    uint64_t hi = (uint64_t)(x >> 64), lo = (uint64_t)x;
    if (hi)
        return 128 - __builtin_clzll(hi);
    if (lo)
        return 64 - __builtin_clzll(lo);
    return 0;
}

/* The last index whose start is <= a (the first start is 0, so never -1). */
static Py_ssize_t
find4(const Py_buffer *b, const uint32_t *idx, uint32_t a)
{
    const uint32_t *s = b->buf;
    Py_ssize_t lo = idx[a >> 16], hi = (Py_ssize_t)idx[(a >> 16) + 1] + 1;  /* in [lo, hi) */
    while (hi - lo > 1) {
        Py_ssize_t mid = (lo + hi) / 2;
        if (s[mid] <= a)
            lo = mid;
        else
            hi = mid;
    }
    return lo;
}

static Py_ssize_t
find6(const Py_buffer *b, const uint32_t *idx, const unsigned char *a)
{
    const unsigned char *s = b->buf;
    unsigned top = ((unsigned)a[0] << 8) | a[1];
    Py_ssize_t lo = idx[top], hi = (Py_ssize_t)idx[top + 1] + 1;
    while (hi - lo > 1) {
        Py_ssize_t mid = (lo + hi) / 2;
        if (memcmp(s + 16 * mid, a, 16) <= 0)
            lo = mid;
        else
            hi = mid;
    }
    return lo;
}

static u128
start_at(const Family *f, const Py_buffer *b, Py_ssize_t i)
{
    if (f->bits == 32)
        return ((const uint32_t *)b->buf)[i];
    return load128((const unsigned char *)b->buf + 16 * i);
}

/* The index of a sorted array of n starts (n >= 1, the first 0): entry h
 * is the last position whose start is at or before bucket h's first
 * address; entry 1 << INDEX_BITS is n - 1. */
static void
make_index(const Family *f, const Py_buffer *b, Py_ssize_t n, uint32_t *idx)
{
    Py_ssize_t j = 0;
    unsigned h;
    for (h = 0; h < (1u << INDEX_BITS); h++) {
        u128 base = (u128)h << (f->bits - INDEX_BITS);
        while (j + 1 < n && start_at(f, b, j + 1) <= base)
            j++;
        idx[h] = (uint32_t)j;
    }
    idx[1u << INDEX_BITS] = (uint32_t)(n - 1);
}

/* Whether the n starts in b increase (0 if they do, else the first index
 * that does not). */
static Py_ssize_t
not_increasing(const Family *f, const Py_buffer *b, Py_ssize_t n)
{
    Py_ssize_t i;
    for (i = 1; i < n; i++)
        if (start_at(f, b, i) <= start_at(f, b, i - 1))
            return i;
    return 0;
}

/* steermap.widest_prefix */
static int
widest_prefix(u128 a, u128 first, u128 last, int bits)
{
    u128 top = bits == 32 ? (u128)0xFFFFFFFFu : ~(u128)0;
    int p = 0;
    if (first > 0)
        p = bits - bit_length(a ^ (first - 1)) + 1;
    if (last < top) {
        int q = bits - bit_length(a ^ (last + 1)) + 1;
        if (q > p)
            p = q;
    }
    return p;
}

static int32_t
over_at(const Family *f, Py_ssize_t j, int32_t dflt)
{
    Py_ssize_t lo = 0, hi = f->nover;
    while (lo < hi) {
        Py_ssize_t mid = (lo + hi) / 2;
        int32_t k = f->over[2 * mid];
        if (k == j)
            return f->over[2 * mid + 1];
        if (k < j)
            lo = mid + 1;
        else
            hi = mid;
    }
    return dflt;
}

/* What decides the client's answer and that answer's scope (SteerMap.locate,
 * ranked_at, scope_at): without penalties its order number, and the scope
 * within the run of ranges with that order; with penalties (which reorder
 * by base score, a place's own) its ranking number, and the scope within
 * its range.  -1 when the map cannot say. */
static int32_t
ranges_look_up(const SteerRanges *r, const unsigned char *client, int v6, int source,
               int penalised, int *scope)
{
    const Py_buffer *bounds;
    const uint32_t *bounds_idx;
    Py_ssize_t nbounds;
    const Family *f;
    Py_ssize_t j, k;
    int32_t i;
    int above = 0;
    u128 a, first, last;
    if (!v6) {
        f = &r->v4;
        a = ((uint32_t)client[0] << 24) | ((uint32_t)client[1] << 16)
            | ((uint32_t)client[2] << 8) | client[3];
        j = find4(&f->starts, f->starts_idx, (uint32_t)a);
    } else {
        f = &r->v6;
        a = load128(client);
        j = find6(&f->starts, f->starts_idx, client);
        i = ((const int32_t *)f->keys.buf)[j];
        if (i < 0) {  /* an alias of the IPv4 subtree */
            int shift = -1 - i;
            if (shift < 0 || shift > 96)
                return -1;
            f = &r->v4;
            a = (a >> shift) & 0xFFFFFFFFu;
            above = 96 - shift;
            j = find4(&f->starts, f->starts_idx, (uint32_t)a);
        }
    }
    i = ((const int32_t *)f->keys.buf)[j];
    if (f->nover)
        i = over_at(f, j, i);
    if (i < 0 || i >= r->ntable)
        return -1;
    if (penalised) {
        bounds = &f->starts;
        bounds_idx = f->starts_idx;
        nbounds = f->n;
        k = j;
    } else {
        bounds = &f->runs;
        bounds_idx = f->runs_idx;
        nbounds = f->nruns;
        k = f->bits == 32 ? find4(bounds, bounds_idx, (uint32_t)a)
            : find6(bounds, bounds_idx, client);
    }
    first = start_at(f, bounds, k);
    last = k + 1 < nbounds ? start_at(f, bounds, k + 1) - 1
        : (f->bits == 32 ? (u128)0xFFFFFFFFu : ~(u128)0);
    *scope = above + widest_prefix(a, first, last, f->bits);
    if (*scope > source)
        *scope = source;
    return penalised ? i : ((const int32_t *)r->table.buf)[i];
}

static int
get_buffer(PyObject *obj, Py_buffer *view, Py_ssize_t itemsize, const char *what)
{
    if (PyObject_GetBuffer(obj, view, PyBUF_SIMPLE) < 0)
        return -1;
    if (view->len % itemsize) {
        PyBuffer_Release(view);
        view->obj = NULL;
        PyErr_Format(PyExc_ValueError, "SteerRanges: %s is not a whole number of items", what);
        return -1;
    }
    return 0;
}

static int
family_init(Family *f, int bits, PyObject *starts, PyObject *keys, PyObject *runs,
            PyObject *over)
{
    Py_ssize_t width = bits == 32 ? 4 : 16, i = 0;
    PyObject *k, *v;
    Py_ssize_t pos = 0;
    f->bits = bits;
    if (get_buffer(starts, &f->starts, width, "starts") < 0
            || get_buffer(keys, &f->keys, 4, "keys") < 0
            || get_buffer(runs, &f->runs, width, "runs") < 0)
        return -1;
    f->n = f->starts.len / width;
    f->nruns = f->runs.len / width;
    if (f->n < 1 || f->keys.len / 4 != f->n || f->nruns < 1 || f->n > UINT32_MAX
            || start_at(f, &f->starts, 0) != 0 || start_at(f, &f->runs, 0) != 0) {
        PyErr_SetString(PyExc_ValueError, "SteerRanges: starts, keys and runs do not agree");
        return -1;
    }
    f->starts_idx = PyMem_Malloc(INDEX_SIZE * sizeof(uint32_t));
    f->runs_idx = PyMem_Malloc(INDEX_SIZE * sizeof(uint32_t));
    if (f->starts_idx == NULL || f->runs_idx == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    /* Millions of ranges for a current database: the checks and the index
     * are made without the GIL, so that a map built in a thread never holds
     * up the thread that answers (the buffers are held: they cannot change). */
    Py_BEGIN_ALLOW_THREADS
    i = not_increasing(f, &f->starts, f->n);
    if (i == 0)
        i = not_increasing(f, &f->runs, f->nruns);
    if (i == 0) {
        make_index(f, &f->starts, f->n, f->starts_idx);
        make_index(f, &f->runs, f->nruns, f->runs_idx);
    }
    Py_END_ALLOW_THREADS
    if (i != 0) {
        PyErr_SetString(PyExc_ValueError, "SteerRanges: starts and runs must be increasing");
        return -1;
    }
    if (!PyDict_Check(over)) {
        PyErr_SetString(PyExc_TypeError, "SteerRanges: over must be a dict");
        return -1;
    }
    f->nover = PyDict_GET_SIZE(over);
    if (f->nover) {
        f->over = PyMem_Malloc((size_t)f->nover * 2 * sizeof(int32_t));
        if (f->over == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        while (PyDict_Next(over, &pos, &k, &v)) {
            long kk = PyLong_AsLong(k), vv = PyLong_AsLong(v);
            if ((kk == -1 || vv == -1) && PyErr_Occurred())
                return -1;
            f->over[2 * i] = (int32_t)kk;
            f->over[2 * i + 1] = (int32_t)vv;
            i++;
        }
        /* insertion sort by range index: dicts of pieces inside networks are small */
        for (i = 1; i < f->nover; i++) {
            int32_t a0 = f->over[2 * i], a1 = f->over[2 * i + 1];
            Py_ssize_t j = i - 1;
            while (j >= 0 && f->over[2 * j] > a0) {
                f->over[2 * j + 2] = f->over[2 * j];
                f->over[2 * j + 3] = f->over[2 * j + 1];
                j--;
            }
            f->over[2 * j + 2] = a0;
            f->over[2 * j + 3] = a1;
        }
    }
    return 0;
}

static void
family_clear(Family *f)
{
    if (f->starts.obj)
        PyBuffer_Release(&f->starts);
    if (f->keys.obj)
        PyBuffer_Release(&f->keys);
    if (f->runs.obj)
        PyBuffer_Release(&f->runs);
    PyMem_Free(f->over);
    PyMem_Free(f->starts_idx);
    PyMem_Free(f->runs_idx);
    f->over = NULL;
    f->starts_idx = f->runs_idx = NULL;
    f->nover = 0;
}

static int
ranges_init(SteerRanges *self, PyObject *args, PyObject *kwds)
{
    PyObject *s4, *k4, *r4, *o4, *s6, *k6, *r6, *o6, *table;
    static char *kwlist[] = {"v4_starts", "v4_keys", "v4_runs", "v4_over", "v6_starts",
                             "v6_keys", "v6_runs", "v6_over", "table", NULL};
    if (self->ready) {
        PyErr_SetString(PyExc_TypeError, "SteerRanges is initialised once");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOOOOOOOO:SteerRanges", kwlist, &s4, &k4,
                                     &r4, &o4, &s6, &k6, &r6, &o6, &table))
        return -1;
    if (family_init(&self->v4, 32, s4, k4, r4, o4) < 0
            || family_init(&self->v6, 128, s6, k6, r6, o6) < 0
            || get_buffer(table, &self->table, 4, "table") < 0)
        return -1;
    self->ntable = self->table.len / 4;
    self->ready = 1;
    return 0;
}

static void
ranges_dealloc(SteerRanges *self)
{
    family_clear(&self->v4);
    family_clear(&self->v6);
    if (self->table.obj)
        PyBuffer_Release(&self->table);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

PyDoc_STRVAR(ranges_look_up_doc,
"look_up(client, source, penalised=False) -> (key, scope): what decides the client's\n"
"answer in this map (its order of PoPs; with penalties its ranking number) and the\n"
"ECS scope of that answer (at most source); key -1: not known.");

static PyObject *
ranges_look_up_py(SteerRanges *self, PyObject *args)
{
    const char *client;
    Py_ssize_t len;
    int source, scope = 0, penalised = 0;
    int32_t order;
    if (!PyArg_ParseTuple(args, "y#i|p", &client, &len, &source, &penalised))
        return NULL;
    if (!self->ready || (len != 4 && len != 16)) {
        PyErr_SetString(PyExc_ValueError, "look_up needs a packed IPv4 or IPv6 address");
        return NULL;
    }
    order = ranges_look_up(self, (const unsigned char *)client, len == 16, source, penalised,
                           &scope);
    return Py_BuildValue("(ii)", order, order < 0 ? 0 : scope);
}

static PyMethodDef ranges_methods[] = {
    {"look_up", (PyCFunction)ranges_look_up_py, METH_VARARGS, ranges_look_up_doc},
    {NULL, NULL, 0, NULL},
};

PyDoc_STRVAR(ranges_doc,
"SteerRanges(v4_starts, v4_keys, v4_runs, v4_over, v6_starts, v6_keys, v6_runs, v6_over,\n"
"            table)\n\n"
"A compiled steering map's arrays for the C data plane (geodns.steermap.SteerMap.c):\n"
"IPv4 starts and runs as uint32 arrays, IPv6 ones as 16-byte big-endian bytes, keys\n"
"and table as int32 arrays, over as dicts (range index -> ranking number).");

static PyTypeObject SteerRangesType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "geodns._udpbatch.SteerRanges",
    .tp_doc = ranges_doc,
    .tp_basicsize = sizeof(SteerRanges),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)ranges_init,
    .tp_dealloc = (destructor)ranges_dealloc,
    .tp_methods = ranges_methods,
};

/* -- Plane ------------------------------------------------------------------------ */

/* The order and scope found for a client network lately, by map: a table
 * of sets of four slots (with one slot per hash, a thousand networks asked
 * in turn shared a fifth of their slots and missed each time; with two, a
 * tenth), so that a client network
 * asked again costs a cache line or two rather than the searches' several
 * (issue 12's "warm" clients).  A map is
 * named by its SteerRanges, which the plane's maps dict keeps alive; the
 * table is emptied when an entry's map is replaced. */
#define CLIENT_SLOTS 8192
#define CLIENT_WAYS 4

struct client_slot {
    const void *ranges;     /* NULL: empty */
    unsigned char addr[16];
    uint8_t v6, source, scope, unused;
    int32_t order;
    /* The answer learnt for this order and steered entry index, while the
     * plane's generation is gen (a borrowed (Answer, cid) from outcomes:
     * learn() and forget() change the generation, the only ways an outcome
     * can go). */
    uint32_t gen;
    int32_t index;
    PyObject *outcome;
};

static unsigned
client_hash(const void *ranges, const unsigned char *addr, int v6, int source)
{
    uint64_t a, b;
    memcpy(&a, addr, 8);
    memcpy(&b, addr + 8, 8);
    a ^= (b * 0x9E3779B97F4A7C15ull) ^ ((uint64_t)(uintptr_t)ranges << 7)
        ^ ((uint64_t)(source | (v6 << 8)) << 40);
    return (unsigned)((a * 0xD6E8FEB86659FD93ull) >> (64 - 13)) & (CLIENT_SLOTS - 1);
}

/* The exact table's entries asked for lately, by a hash of the key made
 * here: a name asked again costs one compare of its bytes, not a bytes
 * object, its SipHash and the dict's probe.  Each slot holds its key and
 * entry (strong references); the table never changes under a plane. */
#define EXACT_SLOTS 1024

struct exact_slot {
    PyObject *key;    /* bytes; NULL: empty */
    PyObject *entry;
    uint64_t hash;
};

static uint64_t
key_hash(const unsigned char *k, Py_ssize_t n)
{
    uint64_t h = 0x84222325CBF29CE4ull ^ (uint64_t)n, w;
    while (n >= 8) {
        memcpy(&w, k, 8);
        h = (h ^ w) * 0x9E3779B97F4A7C15ull;
        h ^= h >> 29;
        k += 8;
        n -= 8;
    }
    w = 0;
    memcpy(&w, k, (size_t)n);
    h = (h ^ w) * 0x9E3779B97F4A7C15ull;
    return h ^ (h >> 32);
}

typedef struct {
    PyObject_HEAD
    PyObject *exact;       /* dict: lower-cased name + type + class -> Answer | Steered */
    PyObject *nodes;       /* dict: lower-cased name -> Node */
    PyObject *answer_type, *steered_type, *node_type, *proof_type;
    Py_ssize_t off_heads, off_tails, off_cid, off_signed, off_index;
    Py_ssize_t off_wild, off_below, off_sec, off_find;
    PyObject *maps;        /* dict: steered entry index -> SteerRanges */
    PyObject *outcomes;    /* dict: index << 32 | order -> (Answer, cid) */
    int payload;
    int penalised;  /* the health view has penalties: answers by ranking number */
    uint32_t gen;   /* changes whenever outcomes does (client_slot.outcome) */
    unsigned char counted[65536 / 8];
    struct client_slot *clients;  /* CLIENT_SLOTS of them */
    struct exact_slot *exacts;    /* EXACT_SLOTS of them */
} Plane;

typedef struct {
    long key[MAX_COUNTED];
    long n[MAX_COUNTED];
    int used;
    int over;  /* a key that did not fit: flushed early */
} Tally;

static Py_ssize_t
slot_offset(PyObject *type, const char *name)
{
    PyObject *d = PyDict_GetItemString(((PyTypeObject *)type)->tp_dict, name);
    if (d == NULL || !Py_IS_TYPE(d, &PyMemberDescr_Type)
            || ((PyMemberDescrObject *)d)->d_member->type != T_OBJECT_EX) {
        PyErr_Format(PyExc_TypeError, "Plane: %s.%s is not a slot",
                     ((PyTypeObject *)type)->tp_name, name);
        return -1;
    }
    return ((PyMemberDescrObject *)d)->d_member->offset;
}

static PyObject *
slot(PyObject *obj, Py_ssize_t off)
{
    return *(PyObject **)((char *)obj + off);
}

static int
plane_init(Plane *self, PyObject *args, PyObject *kwds)
{
    PyObject *exact, *nodes, *answer_type, *steered_type, *node_type, *proof_type, *counted, *it,
        *item;
    int payload;
    static char *kwlist[] = {"exact", "nodes", "answer_type", "steered_type", "node_type",
                             "proof_type", "counted", "payload", NULL};
    if (self->maps != NULL) {
        PyErr_SetString(PyExc_TypeError, "Plane is initialised once");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!O!O!O!O!O!Oi:Plane", kwlist, &PyDict_Type,
                                     &exact, &PyDict_Type, &nodes, &PyType_Type, &answer_type,
                                     &PyType_Type, &steered_type, &PyType_Type, &node_type,
                                     &PyType_Type, &proof_type, &counted, &payload))
        return -1;
    if ((self->off_heads = slot_offset(answer_type, "heads")) < 0
            || (self->off_tails = slot_offset(answer_type, "tails")) < 0
            || (self->off_cid = slot_offset(answer_type, "cid")) < 0
            || (self->off_signed = slot_offset(answer_type, "signed")) < 0
            || (self->off_index = slot_offset(steered_type, "index")) < 0
            || (self->off_wild = slot_offset(node_type, "wild")) < 0
            || (self->off_below = slot_offset(node_type, "below_answer")) < 0
            || (self->off_sec = slot_offset(node_type, "sec")) < 0
            || (self->off_find = slot_offset(proof_type, "find")) < 0)
        return -1;
    memset(self->counted, 0, sizeof(self->counted));
    it = PyObject_GetIter(counted);
    if (it == NULL)
        return -1;
    while ((item = PyIter_Next(it)) != NULL) {
        long t = PyLong_AsLong(item);
        Py_DECREF(item);
        if (t < 0 || t > 65535) {
            Py_DECREF(it);
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_ValueError, "Plane: a counted type out of range");
            return -1;
        }
        self->counted[t >> 3] |= (unsigned char)(1 << (t & 7));
    }
    Py_DECREF(it);
    if (PyErr_Occurred())
        return -1;
    self->maps = PyDict_New();
    self->outcomes = PyDict_New();
    self->gen = 1;
    self->clients = PyMem_Calloc(CLIENT_SLOTS, sizeof(struct client_slot));
    self->exacts = PyMem_Calloc(EXACT_SLOTS, sizeof(struct exact_slot));
    if (self->maps == NULL || self->outcomes == NULL)
        return -1;
    if (self->clients == NULL || self->exacts == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    Py_INCREF(exact);
    Py_INCREF(nodes);
    Py_INCREF(answer_type);
    Py_INCREF(steered_type);
    Py_INCREF(node_type);
    Py_INCREF(proof_type);
    self->exact = exact;
    self->nodes = nodes;
    self->answer_type = answer_type;
    self->steered_type = steered_type;
    self->node_type = node_type;
    self->proof_type = proof_type;
    self->payload = payload;
    return 0;
}

static int
plane_traverse(Plane *self, visitproc visit, void *arg)
{
    Py_VISIT(self->exact);
    Py_VISIT(self->nodes);
    Py_VISIT(self->answer_type);
    Py_VISIT(self->steered_type);
    Py_VISIT(self->node_type);
    Py_VISIT(self->proof_type);
    Py_VISIT(self->maps);
    Py_VISIT(self->outcomes);
    if (self->exacts != NULL)
        for (int i = 0; i < EXACT_SLOTS; i++)
            Py_VISIT(self->exacts[i].entry);
    return 0;
}

static int
plane_clear(Plane *self)
{
    Py_CLEAR(self->exact);
    Py_CLEAR(self->nodes);
    Py_CLEAR(self->answer_type);
    Py_CLEAR(self->steered_type);
    Py_CLEAR(self->node_type);
    Py_CLEAR(self->proof_type);
    Py_CLEAR(self->maps);
    Py_CLEAR(self->outcomes);
    if (self->exacts != NULL)
        for (int i = 0; i < EXACT_SLOTS; i++) {
            Py_CLEAR(self->exacts[i].key);
            Py_CLEAR(self->exacts[i].entry);
        }
    return 0;
}

static void
plane_dealloc(Plane *self)
{
    PyObject_GC_UnTrack(self);
    plane_clear(self);
    PyMem_Free(self->clients);
    PyMem_Free(self->exacts);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int
tally_flush(Tally *t, PyObject *counts)
{
    int i, rc = 0;
    for (i = 0; i < t->used; i++) {
        PyObject *k = PyLong_FromLong(t->key[i]), *v, *nv;
        long have = 0;
        if (k == NULL)
            return -1;
        v = PyDict_GetItemWithError(counts, k);
        if (v != NULL)
            have = PyLong_AsLong(v);
        else if (PyErr_Occurred()) {
            Py_DECREF(k);
            return -1;
        }
        nv = PyLong_FromLong(have + t->n[i]);
        if (nv == NULL || PyDict_SetItem(counts, k, nv) < 0)
            rc = -1;
        Py_XDECREF(nv);
        Py_DECREF(k);
        if (rc < 0)
            return -1;
    }
    t->used = 0;
    return 0;
}

static int
tally_add(Tally *t, long key, PyObject *counts)
{
    int i;
    for (i = 0; i < t->used; i++)
        if (t->key[i] == key) {
            t->n[i]++;
            return 0;
        }
    if (t->used == MAX_COUNTED && tally_flush(t, counts) < 0)
        return -1;
    t->key[t->used] = key;
    t->n[t->used++] = 1;
    return 0;
}

/* memcpy for the few dozen to few hundred bytes of a question or an answer:
 * fixed-size moves (the compiler makes each one or two instructions), where
 * a memcpy of a size known only at run time became "rep movs", whose start-up
 * was a quarter of plane_answer's own time (perf, the warm steering run). */
static inline void
copy_small(unsigned char *d, const unsigned char *s, size_t n)
{
    if (n >= 16) {
        size_t i;
        for (i = 0; i + 16 <= n; i += 16)
            memcpy(d + i, s + i, 16);
        if (i < n)
            memcpy(d + n - 16, s + n - 16, 16);  /* the rest, overlapping */
    } else if (n >= 8) {
        memcpy(d, s, 8);
        memcpy(d + n - 8, s + n - 8, 8);
    } else if (n >= 4) {
        memcpy(d, s, 4);
        memcpy(d + n - 4, s + n - 4, 4);
    } else {
        while (n--)
            *d++ = *s++;
    }
}

/* Copy a bytes object into out; returns the new position or -1 if it would pass end. */
static Py_ssize_t
put(unsigned char *out, Py_ssize_t at, Py_ssize_t end, PyObject *b)
{
    Py_ssize_t n = PyBytes_GET_SIZE(b);
    if (at + n > end)
        return -1;
    copy_small(out + at, (const unsigned char *)PyBytes_AS_STRING(b), (size_t)n);
    return at + n;
}

/* A Client Subnet option's data as geodns.ecs.client_subnet checks it: the
 * address padded into addr (16 bytes), its family's size (4 or 16) and the
 * source prefix; 0 when the option means FORMERR. */
static int
client_subnet(const unsigned char *opt, Py_ssize_t len, unsigned char *addr, int *source)
{
    int family, size, src;
    Py_ssize_t alen;
    if (len < 4)
        return 0;
    family = (opt[0] << 8) | opt[1];
    src = opt[2];
    if (family == 1)
        size = 4;
    else if (family == 2)
        size = 16;
    else
        return 0;
    if (src > size * 8 || opt[3])
        return 0;
    alen = len - 4;
    if (alen != (src + 7) / 8)
        return 0;
    if (src % 8 && (opt[len - 1] & (0xFF >> (src % 8))))
        return 0;
    memset(addr, 0, 16);
    memcpy(addr, opt + 4, (size_t)alen);
    *source = src;
    return size;
}

/* A name that is not in the exact table nor a node itself: the answer its
 * closest encloser gives for the names below it (Node.below: an NXDOMAIN,
 * or the referral of a cut), when that is one pre-built Answer (not a
 * wildcard's synthesis); *sec is the node's zone signing (None: unsigned).
 * NULL: Python's to answer (-2 in *err with an exception set). */
static PyObject *
closest_below(Plane *self, const unsigned char *name, Py_ssize_t nlen,
              const unsigned char *type_class, PyObject **sec, int *err)
{
    unsigned qtype = ((unsigned)type_class[0] << 8) | type_class[1];
    Py_ssize_t i = 0;
    int first = 1;
    if (type_class[2] != 0 || type_class[3] != 1 || qtype == 251 || qtype == 252)
        return NULL;  /* class IN only; IXFR and AXFR are refused there */
    while (1) {
        PyObject *k = PyBytes_FromStringAndSize((const char *)name + i, nlen - i), *node;
        if (k == NULL) {
            *err = -2;
            return NULL;
        }
        node = PyDict_GetItemWithError(self->nodes, k);
        Py_DECREF(k);
        if (node == NULL && PyErr_Occurred()) {
            *err = -2;
            return NULL;
        }
        if (node != NULL) {
            PyObject *wild, *below;
            if (first || Py_TYPE(node) != (PyTypeObject *)self->node_type)
                return NULL;  /* the name itself exists: Node.answer is Python's */
            wild = slot(node, self->off_wild);
            below = slot(node, self->off_below);
            if (wild != Py_None || below == NULL
                    || Py_TYPE(below) != (PyTypeObject *)self->answer_type)
                return NULL;
            *sec = slot(node, self->off_sec);
            return *sec == NULL ? NULL : below;
        }
        if (!name[i])
            return NULL;  /* no zone of ours: REFUSED, Python's */
        i += name[i] + 1;
        first = 0;
    }
}

/* Answer one query into out (at most cap bytes): its length, or -1 when
 * Python must answer it, or -2 with an exception set.  peer is the raw
 * sockaddr the query came from. */
static Py_ssize_t
plane_answer(Plane *self, const unsigned char *data, Py_ssize_t n, const unsigned char *peer,
             Py_ssize_t peerlen, unsigned char *out, Py_ssize_t cap, Tally *tally,
             PyObject *counts)
{
    unsigned char keybuf[260 + 4];
    Py_ssize_t i, qend, p, klen, at;
    int edns, do_bit = 0, ln, tail_i;
    const unsigned char *ecs = NULL;
    Py_ssize_t ecs_len = 0;
    PyObject *key, *entry, *ans, *tails, *heads, *signed_, *base, *cidobj, *zone_sec = NULL;
    long cid, qt;
    int scope = 0;

    if (n < 12 || (data[2] & 0xF8) || data[4] || data[5] != 1 || data[6] || data[7]
            || data[8] || data[9] || data[10] || data[11] > 1)
        return -1;
    edns = data[11];
    /* the question name */
    i = 12;
    while (1) {
        if (i >= n)
            return -1;
        ln = data[i];
        if (!ln)
            break;
        if (ln > 63)
            return -1;
        i += ln + 1;
    }
    qend = i + 1;
    p = qend + 4;
    if (qend > 267 || p > n)
        return -1;
    if (edns) {
        Py_ssize_t rdlen;
        if (p + 11 > n || data[p] || data[p + 1] || data[p + 2] != 41 || data[p + 6])
            return -1;
        rdlen = (data[p + 9] << 8) | data[p + 10];
        if (p + 11 + rdlen != n)
            return -1;
        if (n != p + 11) {
            if (n < p + 15 || data[p + 11] || data[p + 12] != 8
                    || n - p - 15 != ((data[p + 13] << 8) | data[p + 14]))
                return -1;
            ecs = data + p + 15;
            ecs_len = n - p - 15;
        }
        do_bit = data[p + 7] & 0x80;
        tail_i = do_bit ? 2 : 1;
    } else {
        if (p != n)
            return -1;
        tail_i = 0;
    }
    /* look up: the name lower-cased (ASCII letters only, as bytes.lower()) */
    klen = p - 12;
    for (i = 0; i < klen; i++) {
        unsigned char c = data[12 + i];
        keybuf[i] = (i < qend - 12 && c >= 'A' && c <= 'Z') ? (unsigned char)(c + 32) : c;
    }
    {
        uint64_t h = key_hash(keybuf, klen);
        struct exact_slot *es = self->exacts + (h & (EXACT_SLOTS - 1));
        if (es->key != NULL && es->hash == h && PyBytes_GET_SIZE(es->key) == klen
                && memcmp(PyBytes_AS_STRING(es->key), keybuf, (size_t)klen) == 0) {
            entry = es->entry;
        } else {
            key = PyBytes_FromStringAndSize((const char *)keybuf, klen);
            if (key == NULL)
                return -2;
            entry = PyDict_GetItemWithError(self->exact, key);
            if (entry != NULL) {
                PyObject *old_key = es->key, *old_entry = es->entry;
                Py_INCREF(entry);
                es->key = key;  /* (its reference) */
                es->entry = entry;
                es->hash = h;
                Py_XDECREF(old_key);
                Py_XDECREF(old_entry);
            } else {
                Py_DECREF(key);
            }
        }
    }
    if (entry == NULL) {
        int err = 0;
        if (PyErr_Occurred())
            return -2;
        entry = closest_below(self, keybuf, qend - 12, data + qend, &zone_sec, &err);
        if (entry == NULL)
            return err ? err : -1;
    }

    unsigned char client[16] = {0};
    int v6 = 0, source = 0, steered_scope = -1;
    if (Py_TYPE(entry) == (PyTypeObject *)self->answer_type) {
        ans = entry;
        if (ecs != NULL && !client_subnet(ecs, ecs_len, client, &source))
            return -1;  /* FORMERR */
        cidobj = slot(ans, self->off_cid);
    } else if (Py_TYPE(entry) == (PyTypeObject *)self->steered_type) {
        PyObject *idx = slot(entry, self->off_index), *ranges, *okey, *outcome;
        long index;
        int32_t order;
        int echo_zero = 0;
        if (idx == NULL || !PyLong_Check(idx))
            return -1;
        ranges = PyDict_GetItemWithError(self->maps, idx);
        if (ranges == NULL)
            return PyErr_Occurred() ? -2 : -1;
        if (ecs != NULL) {
            int size = client_subnet(ecs, ecs_len, client, &source);
            if (!size)
                return -1;
            v6 = size == 16;
            if (!source)
                echo_zero = 1;  /* "not by subnet": the resolver's address, scope 0 */
        }
        if (ecs == NULL || echo_zero) {
            if (peerlen >= 8 && ((const struct sockaddr *)peer)->sa_family == AF_INET) {
                memcpy(client, peer + 4, 4);
                v6 = 0;
                source = 32;
            } else if (peerlen >= 24 && ((const struct sockaddr *)peer)->sa_family == AF_INET6) {
                memcpy(client, peer + 8, 16);
                v6 = 1;
                source = 128;
            } else {
                return -1;
            }
        }
        index = PyLong_AsLong(idx);
        if (index == -1 && PyErr_Occurred())
            return -2;
        {
            /* CLIENT_WAYS ways: a network's set of slots, the one used last first */
            struct client_slot *set = self->clients
                + (client_hash(ranges, client, v6, source) & ~(unsigned)(CLIENT_WAYS - 1)), *c;
            int w;
            for (w = 0; w < CLIENT_WAYS; w++) {
                c = set + w;
                if (c->ranges == ranges && c->source == source && c->v6 == v6
                        && memcmp(c->addr, client, 16) == 0)
                    break;
            }
            if (w == CLIENT_WAYS) {  /* a miss: the least recently used goes */
                w = CLIENT_WAYS - 1;
                set[w].ranges = NULL;
            }
            if (w > 0) {  /* to the front */
                struct client_slot t = set[w];
                memmove(set + 1, set, (size_t)w * sizeof *set);
                set[0] = t;
            }
            c = set;
            if (c->ranges != NULL) {
                order = c->order;
                steered_scope = c->scope;
            } else {
                order = ranges_look_up((SteerRanges *)ranges, client, v6, source,
                                       self->penalised, &steered_scope);
                if (order < 0)
                    return -1;
                c->ranges = ranges;
                memcpy(c->addr, client, 16);
                c->v6 = (uint8_t)v6;
                c->source = (uint8_t)source;
                c->scope = (uint8_t)steered_scope;
                c->order = order;
                c->gen = 0;
            }
            if (c->gen == self->gen && c->index == index) {
                outcome = c->outcome;
            } else {
                okey = PyLong_FromLongLong(((long long)index << 32) | (uint32_t)order);
                if (okey == NULL)
                    return -2;
                outcome = PyDict_GetItemWithError(self->outcomes, okey);
                Py_DECREF(okey);
                if (outcome == NULL)
                    return PyErr_Occurred() ? -2 : -1;
                c->gen = self->gen;
                c->index = (int32_t)index;
                c->outcome = outcome;
            }
        }
        if (echo_zero)
            steered_scope = 0;
        ans = PyTuple_GET_ITEM(outcome, 0);
        cidobj = PyTuple_GET_ITEM(outcome, 1);
    } else {
        return -1;
    }
    /* sign: with DO, the signed form: an Answer, or a Proof's answer for
     * the name's cover when its Finder keeps one (else Python makes it) */
    signed_ = slot(ans, self->off_signed);
    if (signed_ == NULL)
        return -1;
    base = ans;  /* what the body comes from */
    if (do_bit && signed_ == Py_None && zone_sec != NULL && zone_sec != Py_None)
        return -1;  /* a signed zone's template, its proof not made yet */
    if (do_bit && signed_ != Py_None) {
        if (Py_TYPE(signed_) == (PyTypeObject *)self->answer_type) {
            base = signed_;
        } else if (Py_TYPE(signed_) == (PyTypeObject *)self->proof_type) {
            /* Proof.find is a Finder's bound get */
            PyObject *find = slot(signed_, self->off_find), *finder = NULL, *k;
            if (find != NULL && PyCFunction_Check(find))
                finder = PyCFunction_GET_SELF(find);
            if (finder == NULL || !is_finder(finder))
                return -1;
            k = PyBytes_FromStringAndSize((const char *)keybuf, klen);
            if (k == NULL)
                return -2;
            base = finder_find(finder, k);
            Py_DECREF(k);
            if (base == NULL)
                return PyErr_Occurred() ? -2 : -1;
            if (Py_TYPE(base) != (PyTypeObject *)self->answer_type)
                return -1;
        } else {
            return -1;
        }
    }
    heads = slot(base, self->off_heads);
    tails = slot(base, self->off_tails);
    if (heads == NULL || tails == NULL || cidobj == NULL || !PyLong_Check(cidobj)
            || !PyTuple_Check(tails) || PyTuple_GET_SIZE(tails) != 4)
        return -1;
    cid = PyLong_AsLong(cidobj);
    /* assemble: ID, head, the question as sent, then what follows it in two
     * pieces (compile.Tails: body and OPT, with DO do_body and do_opt) */
    if (cap < p)
        return -1;
    out[0] = data[0];
    out[1] = data[1];
    at = put(out, 2, cap, PyTuple_GET_ITEM(heads, (edns << 1) | (data[2] & 1)));
    if (at < 0)
        return -1;
    copy_small(out + at, data + 12, (size_t)(p - 12));
    at += p - 12;
    at = put(out, at, cap, PyTuple_GET_ITEM(tails, tail_i & 2));
    if (at < 0)
        return -1;
    if (ecs == NULL) {
        if (tail_i) {
            at = put(out, at, cap, PyTuple_GET_ITEM(tails, tail_i | 1));
            if (at < 0)
                return -1;
        }
    } else {
        /* our OPT with the option echoed with our scope */
        if (at + 11 + 4 + ecs_len > cap)
            return -1;
        out[at++] = 0;
        out[at++] = 0;
        out[at++] = 41;
        out[at++] = (unsigned char)(self->payload >> 8);
        out[at++] = (unsigned char)self->payload;
        out[at++] = 0;
        out[at++] = 0;
        out[at++] = do_bit ? 0x80 : 0;
        out[at++] = 0;
        out[at++] = (unsigned char)((4 + ecs_len) >> 8);
        out[at++] = (unsigned char)(4 + ecs_len);
        out[at++] = 0;
        out[at++] = 8;
        out[at++] = (unsigned char)(ecs_len >> 8);
        out[at++] = (unsigned char)ecs_len;
        out[at++] = ecs[0];
        out[at++] = ecs[1];
        out[at++] = ecs[2];
        out[at++] = (unsigned char)(steered_scope < 0 ? scope : steered_scope);
        copy_small(out + at, ecs + 4, (size_t)(ecs_len - 4));
        at += ecs_len - 4;
    }
    /* fit: over 512 bytes only within both payload sizes, else Python cuts it */
    if (at > MIN_UDP && (!edns || at > self->payload
                         || at > ((data[p + 3] << 8) | data[p + 4])))
        return -1;
    qt = (data[qend] << 8) | data[qend + 1];
    if (!(self->counted[qt >> 3] & (1 << (qt & 7))))
        qt = OTHER_SLOT;
    if (tally_add(tally, cid | (qt << 1) | 1, counts) < 0)
        return -2;
    return at;
}

PyDoc_STRVAR(plane_answer_doc,
"answer(data, peer, counts) -> bytes | None\n\n"
"The answer to one UDP query from peer (raw sockaddr bytes), as serve() would send it,\n"
"counted into counts; None when Python must answer it.");

static PyObject *
plane_answer_py(Plane *self, PyObject *args)
{
    const char *data, *peer;
    Py_ssize_t n, peerlen, len;
    PyObject *counts;
    Tally tally = {.used = 0};
    unsigned char out[BUFSIZE];
    if (!PyArg_ParseTuple(args, "y#y#O!", &data, &n, &peer, &peerlen, &PyDict_Type, &counts))
        return NULL;
    if (self->maps == NULL) {
        PyErr_SetString(PyExc_ValueError, "Plane not initialised");
        return NULL;
    }
    len = plane_answer(self, (const unsigned char *)data, n, (const unsigned char *)peer,
                       peerlen, out, BUFSIZE, &tally, counts);
    if (len == -2 || tally_flush(&tally, counts) < 0)
        return NULL;
    if (len < 0)
        Py_RETURN_NONE;
    return PyBytes_FromStringAndSize((const char *)out, len);
}

/* What was learnt changed: no client slot's outcome holds (0 is no slot's). */
static void
next_gen(Plane *self)
{
    if (++self->gen == 0)
        self->gen = 1;
}

PyDoc_STRVAR(plane_learn_doc,
"learn(index, ranges, key, answer, cid)\n\n"
"Every client of steered entry index whose order of PoPs in ranges (a SteerRanges) is\n"
"key (its ranking number, after forget(penalised=True)) gets answer, counted under\n"
"label number cid, until forget().");

static PyObject *
plane_learn(Plane *self, PyObject *args)
{
    PyObject *index, *ranges, *ans, *cid, *okey, *value;
    long order;
    long idx;
    int rc;
    if (!PyArg_ParseTuple(args, "O!O!lOO!", &PyLong_Type, &index, &SteerRangesType, &ranges,
                          &order, &ans, &PyLong_Type, &cid))
        return NULL;
    if (self->maps == NULL) {
        PyErr_SetString(PyExc_ValueError, "Plane not initialised");
        return NULL;
    }
    if (Py_TYPE(ans) != (PyTypeObject *)self->answer_type) {
        PyErr_SetString(PyExc_TypeError, "learn: answer must be an Answer");
        return NULL;
    }
    idx = PyLong_AsLong(index);
    if (idx < 0 || order < 0 || order > INT32_MAX) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "learn: index and order are numbers >= 0");
        return NULL;
    }
    {
        PyObject *had = PyDict_GetItemWithError(self->maps, index);
        if (had == NULL && PyErr_Occurred())
            return NULL;
        if (had != NULL && had != ranges)  /* the slots may name the old map */
            memset(self->clients, 0, CLIENT_SLOTS * sizeof(struct client_slot));
        if (had != ranges && PyDict_SetItem(self->maps, index, ranges) < 0)
            return NULL;
    }
    okey = PyLong_FromLongLong(((long long)idx << 32) | order);
    value = PyTuple_Pack(2, ans, cid);
    rc = okey == NULL || value == NULL ? -1 : PyDict_SetItem(self->outcomes, okey, value);
    next_gen(self);
    Py_XDECREF(okey);
    Py_XDECREF(value);
    if (rc < 0)
        return NULL;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(plane_forget_doc,
"forget(penalised=False): health changed; every answer learnt is forgotten.  With\n"
"penalised (the new health view has penalties) answers are learnt and found by the\n"
"client's ranking number in a map rather than its order of PoPs.");

static PyObject *
plane_forget(Plane *self, PyObject *args)
{
    int penalised = 0;
    if (!PyArg_ParseTuple(args, "|p:forget", &penalised))
        return NULL;
    if (self->outcomes != NULL)
        PyDict_Clear(self->outcomes);
    next_gen(self);
    if (penalised != self->penalised && self->clients != NULL) {
        /* the slots hold keys and scopes of the other kind */
        memset(self->clients, 0, CLIENT_SLOTS * sizeof(struct client_slot));
        self->penalised = penalised;
    }
    Py_RETURN_NONE;
}

PyDoc_STRVAR(plane_learnt_doc, "learnt() -> int: how many (entry, order) answers are known.");

static PyObject *
plane_learnt(Plane *self, PyObject *Py_UNUSED(ignored))
{
    return PyLong_FromSsize_t(self->outcomes != NULL ? PyDict_GET_SIZE(self->outcomes) : 0);
}


/* Answers the n datagrams read into io (rmsgs as recvmmsg left them): those
 * the plane can in C, the others (every one with punt_all) passed to
 * fallback in one list; sends every answer.  *unsent counts answers the
 * socket did not take; *punted is set when fallback was called.  -1 with an
 * exception set on an error (what was answered is still sent). */
static int
answer_batch(Plane *self, struct io *io, int fd, int n, int punt_all, PyObject *counts,
             PyObject *fallback, PyObject *limiter, Py_ssize_t *unsent, int *punted)
{
    int i;
    unsigned int m = 0;
    PyObject *left = NULL, *back = NULL, *fast = NULL;
    Tally tally = {.used = 0};
    uint32_t now = 0;
    *unsent = 0;
    *punted = 0;
    if (limiter != Py_None)
        now = rrl_now(limiter);
    for (i = 0; i < n; i++) {
        struct msghdr *h = &io->rmsgs[i].msg_hdr;
        Py_ssize_t len = (h->msg_flags & MSG_TRUNC) ? 0 : io->rmsgs[i].msg_len;
        socklen_t alen = h->msg_namelen;
        Py_ssize_t got = -1;
        h->msg_namelen = sizeof(struct sockaddr_storage);  /* ready for the next read */
        if (len && !punt_all)
            got = plane_answer(self, (unsigned char *)io->bufs[i], len,
                               (unsigned char *)&io->addrs[i], alen,
                               io->outbufs[m], BUFSIZE, &tally, counts);
        if (got == -2)
            goto fail;
        if (got >= 0) {
            if (limiter != Py_None && !rrl_check(limiter, io->outbufs[m], &got,
                                                 (const char *)&io->addrs[i], alen, now))
                continue;  /* over the rate: left out */
            prepare_send(io, m, io->outbufs[m], (size_t)got, &io->addrs[i], alen);
            m++;
            continue;
        }
        {
            PyObject *pair = Py_BuildValue("(y#y#)", io->bufs[i], len,
                                           (const char *)&io->addrs[i], (Py_ssize_t)alen);
            if (pair == NULL)
                goto fail;
            if (left == NULL && (left = PyList_New(0)) == NULL) {
                Py_DECREF(pair);
                goto fail;
            }
            if (PyList_Append(left, pair) < 0) {
                Py_DECREF(pair);
                goto fail;
            }
            Py_DECREF(pair);
        }
    }
    if (tally_flush(&tally, counts) < 0)
        goto fail;
    if (left != NULL) {
        Py_ssize_t k, total;
        *punted = 1;
        back = PyObject_CallOneArg(fallback, left);
        if (back == NULL)
            goto fail;
        fast = PySequence_Fast(back, "fallback must return a sequence of (bytes, bytes) pairs");
        if (fast == NULL)
            goto fail;
        total = PySequence_Fast_GET_SIZE(fast);
        for (k = 0; k < total && m < BATCH; k++) {
            PyObject *pair = PySequence_Fast_GET_ITEM(fast, k), *data, *addr;
            if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2
                    || !PyBytes_Check(data = PyTuple_GET_ITEM(pair, 0))
                    || !PyBytes_Check(addr = PyTuple_GET_ITEM(pair, 1))) {
                PyErr_SetString(PyExc_TypeError, "fallback must return (bytes, bytes) pairs");
                goto fail;
            }
            prepare_send(io, m, PyBytes_AS_STRING(data), (size_t)PyBytes_GET_SIZE(data),
                         PyBytes_AS_STRING(addr), (socklen_t)PyBytes_GET_SIZE(addr));
            m++;
        }
    }
    *unsent = m ? send_all(io, fd, m, NULL) : 0;
    Py_XDECREF(fast);
    Py_XDECREF(back);
    Py_XDECREF(left);
    return 0;
fail:
    /* what was answered here still goes out */
    if (m)
        send_all(io, fd, m, NULL);
    Py_XDECREF(fast);
    Py_XDECREF(back);
    Py_XDECREF(left);
    return -1;
}

/* The arguments serve() and run() share; 0, or -1 with an exception set. */
static int
serve_ready(Plane *self, PyObject *limiter)
{
    if (self->maps == NULL) {
        PyErr_SetString(PyExc_ValueError, "Plane not initialised");
        return -1;
    }
    if (limiter != Py_None && !rrl_is_limiter(limiter)) {
        PyErr_SetString(PyExc_TypeError, "limiter must be a RateLimiter or None");
        return -1;
    }
    return 0;
}

PyDoc_STRVAR(plane_serve_doc,
"serve(fd, counts, fallback, limiter=None) -> (received, unsent)\n\n"
"Read up to 64 datagrams, answer those the plane can, pass the others as a list of\n"
"(data, sockaddr) pairs to fallback (which returns (answer, sockaddr) pairs, rate\n"
"limited already), send every answer.  With a RateLimiter, the plane's answers go\n"
"through it first (left out, or cut to their question with TC).  received is 0 when\n"
"nothing was waiting; unsent counts answers the socket did not take.");

static PyObject *
plane_serve(Plane *self, PyObject *args)
{
    int fd, n, punted;
    PyObject *counts, *fallback, *limiter = Py_None;
    Py_ssize_t unsent = 0;
    struct io *io;
    if (!PyArg_ParseTuple(args, "iO!O|O", &fd, &PyDict_Type, &counts, &fallback, &limiter))
        return NULL;
    if (serve_ready(self, limiter) < 0 || (io = thread_io()) == NULL)
        return NULL;
    recv_prepare(io);
    n = recvmmsg(fd, io->rmsgs, BATCH, MSG_DONTWAIT, NULL);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            return Py_BuildValue("(ii)", 0, 0);
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    if (answer_batch(self, io, fd, n, 0, counts, fallback, limiter, &unsent, &punted) < 0)
        return NULL;
    return Py_BuildValue("(in)", n, unsent);
}

/* Whether source still serves this snapshot: source.responder is responder
 * and source.limiter is limiter.  -1 with an exception set on an error. */
static int
still_current(PyObject *source, PyObject *responder, PyObject *limiter)
{
    static PyObject *responder_name, *limiter_name;
    PyObject *now;
    int same;
    if (responder_name == NULL
            && (responder_name = PyUnicode_InternFromString("responder")) == NULL)
        return -1;
    if (limiter_name == NULL && (limiter_name = PyUnicode_InternFromString("limiter")) == NULL)
        return -1;
    if ((now = PyObject_GetAttr(source, responder_name)) == NULL)
        return -1;
    same = now == responder;
    Py_DECREF(now);
    if (!same)
        return 0;
    if ((now = PyObject_GetAttr(source, limiter_name)) == NULL)
        return -1;
    same = now == limiter;
    Py_DECREF(now);
    return same;
}

/* Whether wake is readable (1), without waiting; -1 with OSError set. */
static int
woken(int wake)
{
    struct pollfd fds = {.fd = wake, .events = POLLIN};
    int r;
    while ((r = poll(&fds, 1, 0)) < 0 && errno == EINTR)
        ;
    if (r < 0 || fds.revents & POLLNVAL) {
        errno = r < 0 ? errno : EBADF;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    return fds.revents != 0;
}

PyDoc_STRVAR(plane_run_doc,
"run(fd, wake, counts, fallback, limiter, source, responder, rounds) -> (received, unsent)\n\n"
"serve() over and over, without Python in between.  Each read is a recvmmsg that waits\n"
"(MSG_WAITFORONE, without the GIL) for the first datagram when fd is blocking, as\n"
"gdnsd's and Knot's threads read, for at most fd's SO_RCVTIMEO.  Returns once a read\n"
"finds nothing (fd non-blocking, or the time ran out), when fallback was called or an\n"
"answer was not sent, or when wake is readable (looked at every rounds batches).  A\n"
"batch read after source.responder stopped being responder (or source.limiter\n"
"limiter) all goes to fallback, which answers it from what is served now.  received\n"
"is what was read in all.");

static PyObject *
plane_run(Plane *self, PyObject *args)
{
    int fd, wake, rounds, batches = 0, punted = 0;
    long long total = 0;
    PyObject *counts, *fallback, *limiter, *source, *responder;
    Py_ssize_t unsent = 0;
    struct io *io;
    if (!PyArg_ParseTuple(args, "iiO!OOOOi", &fd, &wake, &PyDict_Type, &counts, &fallback,
                          &limiter, &source, &responder, &rounds))
        return NULL;
    if (serve_ready(self, limiter) < 0 || (io = thread_io()) == NULL)
        return NULL;
    if (rounds < 1) {
        PyErr_SetString(PyExc_ValueError, "run: rounds must be at least 1");
        return NULL;
    }
    recv_prepare(io);
    for (;;) {
        int n, current, r;
        Py_BEGIN_ALLOW_THREADS
        n = recvmmsg(fd, io->rmsgs, BATCH, MSG_WAITFORONE, NULL);
        Py_END_ALLOW_THREADS
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            return PyErr_SetFromErrno(PyExc_OSError);
        }
        total += n;
        if ((current = still_current(source, responder, limiter)) < 0)
            return NULL;
        if (answer_batch(self, io, fd, n, !current, counts, fallback, limiter, &unsent,
                         &punted) < 0)
            return NULL;
        if (punted || unsent)
            break;
        if (++batches == rounds) {
            batches = 0;
            if ((r = woken(wake)) != 0) {
                if (r < 0)
                    return NULL;
                break;
            }
        }
    }
    return Py_BuildValue("(Ln)", total, unsent);
}

static PyMethodDef plane_methods[] = {
    {"answer", (PyCFunction)plane_answer_py, METH_VARARGS, plane_answer_doc},
    {"serve", (PyCFunction)plane_serve, METH_VARARGS, plane_serve_doc},
    {"run", (PyCFunction)plane_run, METH_VARARGS, plane_run_doc},
    {"learn", (PyCFunction)plane_learn, METH_VARARGS, plane_learn_doc},
    {"forget", (PyCFunction)plane_forget, METH_VARARGS, plane_forget_doc},
    {"learnt", (PyCFunction)plane_learnt, METH_NOARGS, plane_learnt_doc},
    {NULL, NULL, 0, NULL},
};

PyDoc_STRVAR(plane_doc,
"Plane(exact, answer_type, steered_type, counted, payload)\n\n"
"The UDP answers of one snapshot that C gives by itself (see geodns/_plane.c):\n"
"exact is the snapshot's exact table, answer_type and steered_type the classes of its\n"
"values (geodns.compile.Answer, Steered), counted the query types counted apart\n"
"(geodns.counters.COUNTED_QTYPES), payload our EDNS UDP payload size.");

static PyTypeObject PlaneType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "geodns._udpbatch.Plane",
    .tp_doc = plane_doc,
    .tp_basicsize = sizeof(Plane),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)plane_init,
    .tp_dealloc = (destructor)plane_dealloc,
    .tp_traverse = (traverseproc)plane_traverse,
    .tp_clear = (inquiry)plane_clear,
    .tp_methods = plane_methods,
};

int
plane_add_types(PyObject *m)
{
    if (PyType_Ready(&SteerRangesType) < 0 || PyType_Ready(&PlaneType) < 0)
        return -1;
    Py_INCREF(&SteerRangesType);
    if (PyModule_AddObject(m, "SteerRanges", (PyObject *)&SteerRangesType) < 0) {
        Py_DECREF(&SteerRangesType);
        return -1;
    }
    Py_INCREF(&PlaneType);
    if (PyModule_AddObject(m, "Plane", (PyObject *)&PlaneType) < 0) {
        Py_DECREF(&PlaneType);
        return -1;
    }
    return 0;
}
