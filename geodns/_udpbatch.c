/*
 * Batched UDP I/O for geodns: one recvmmsg(2) reads up to BATCH datagrams,
 * one sendmmsg(2) sends the answers.  The DNS work stays in Python; this
 * only saves the per-packet system calls, which on loopback cost more than
 * answering a query does.  Optional: geodns falls back to recvfrom/sendto
 * when this module is not built (see geodns/server/transport.py).
 *
 * Addresses travel as the raw sockaddr bytes the kernel gave us, so the
 * answer goes back to exactly where the query came from, and Python can read
 * the client address from them without building strings.
 *
 * RateLimiter is response rate limiting (docs/abuse.md): one filter() call
 * per batch of (answer, address) pairs, before they are sent.
 *
 * canonical_key and CanonicalIndex find the NSEC that covers a name that
 * does not exist (DNSSEC's canonical order), per query with DO.
 */
#define PY_SSIZE_T_CLEAN
#define _GNU_SOURCE
#include <Python.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <pthread.h>
#include <time.h>

#include "_udpbatch.h"

static pthread_key_t io_key;
static pthread_once_t io_once = PTHREAD_ONCE_INIT;
static int io_key_made = 0;

static void
io_key_make(void)
{
    io_key_made = pthread_key_create(&io_key, free) == 0;
}

struct io *
thread_io(void)
{
    struct io *io;
    pthread_once(&io_once, io_key_make);
    if (!io_key_made) {
        PyErr_SetString(PyExc_OSError, "no thread-specific key for the UDP vectors");
        return NULL;
    }
    io = pthread_getspecific(io_key);
    if (io == NULL) {
        io = calloc(1, sizeof *io);
        if (io == NULL || pthread_setspecific(io_key, io) != 0) {
            free(io);
            PyErr_NoMemory();
            return NULL;
        }
    }
    return io;
}

void
recv_prepare(struct io *io)
{
    int i;
    for (i = 0; i < BATCH; i++) {
        io->riov[i].iov_base = io->bufs[i];
        io->riov[i].iov_len = BUFSIZE;
        memset(&io->rmsgs[i].msg_hdr, 0, sizeof(struct msghdr));
        io->rmsgs[i].msg_hdr.msg_iov = &io->riov[i];
        io->rmsgs[i].msg_hdr.msg_iovlen = 1;
        io->rmsgs[i].msg_hdr.msg_name = &io->addrs[i];
        io->rmsgs[i].msg_hdr.msg_namelen = sizeof(struct sockaddr_storage);
    }
}

PyDoc_STRVAR(recv_batch_doc,
"recv_batch(fd) -> list[tuple[bytes, bytes]]\n\n"
"Read up to 64 datagrams from a non-blocking socket: (data, sockaddr) pairs.\n"
"An empty list when nothing is waiting.  A datagram too large to read whole\n"
"comes back as empty data.");

static PyObject *
recv_batch(PyObject *Py_UNUSED(self), PyObject *args)
{
    int fd, n, i;
    PyObject *list;
    if (!PyArg_ParseTuple(args, "i", &fd))
        return NULL;
    struct io *io = thread_io();
    if (io == NULL)
        return NULL;
    recv_prepare(io);
    n = recvmmsg(fd, io->rmsgs, BATCH, MSG_DONTWAIT, NULL);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            return PyList_New(0);
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    list = PyList_New(n);
    if (list == NULL)
        return NULL;
    for (i = 0; i < n; i++) {
        Py_ssize_t len = (io->rmsgs[i].msg_hdr.msg_flags & MSG_TRUNC) ? 0
            : io->rmsgs[i].msg_len;
        PyObject *data = PyBytes_FromStringAndSize(io->bufs[i], len);
        PyObject *addr = PyBytes_FromStringAndSize((const char *)&io->addrs[i],
                                                   io->rmsgs[i].msg_hdr.msg_namelen);
        PyObject *pair;
        if (data == NULL || addr == NULL) {
            Py_XDECREF(data);
            Py_XDECREF(addr);
            Py_DECREF(list);
            return NULL;
        }
        pair = PyTuple_New(2);
        if (pair == NULL) {
            Py_DECREF(data);
            Py_DECREF(addr);
            Py_DECREF(list);
            return NULL;
        }
        PyTuple_SET_ITEM(pair, 0, data);
        PyTuple_SET_ITEM(pair, 1, addr);
        PyList_SET_ITEM(list, i, pair);
    }
    return list;
}

PyDoc_STRVAR(send_batch_doc,
"send_batch(fd, pairs) -> int\n\n"
"Send (data, sockaddr) pairs with sendmmsg; returns how many were sent.\n"
"What the socket cannot take right now is dropped, as UDP allows.");

void
prepare_send(struct io *io, unsigned int k, void *buf, size_t len, void *name,
             socklen_t namelen)
{
    io->siov[k].iov_base = buf;
    io->siov[k].iov_len = len;
    memset(&io->smsgs[k].msg_hdr, 0, sizeof(struct msghdr));
    io->smsgs[k].msg_hdr.msg_iov = &io->siov[k];
    io->smsgs[k].msg_hdr.msg_iovlen = 1;
    io->smsgs[k].msg_hdr.msg_name = name;
    io->smsgs[k].msg_hdr.msg_namelen = namelen;
}

Py_ssize_t
send_all(struct io *io, int fd, unsigned int n, int *blocked)
{
    unsigned int done = 0;
    Py_ssize_t sent = 0;
    while (done < n) {
        int r = sendmmsg(fd, io->smsgs + done, n - done, MSG_DONTWAIT);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            /* EAGAIN: the buffer is full; other errors (e.g. an unreachable
               address) concern one datagram: skip it and go on. */
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                if (blocked != NULL)
                    *blocked = 1;
                break;
            }
            done += 1;
            continue;
        }
        sent += r;
        done += (unsigned int)r;
    }
    return (Py_ssize_t)n - sent;
}

static PyObject *
send_batch(PyObject *Py_UNUSED(self), PyObject *args)
{
    int fd, blocked = 0;
    PyObject *seq, *fast;
    Py_ssize_t total, done = 0, sent = 0;
    if (!PyArg_ParseTuple(args, "iO", &fd, &seq))
        return NULL;
    struct io *io = thread_io();
    if (io == NULL)
        return NULL;
    fast = PySequence_Fast(seq, "send_batch needs a sequence of (data, sockaddr) pairs");
    if (fast == NULL)
        return NULL;
    total = PySequence_Fast_GET_SIZE(fast);
    while (done < total && !blocked) {
        Py_ssize_t chunk = total - done < BATCH ? total - done : BATCH;
        Py_ssize_t i;
        for (i = 0; i < chunk; i++) {
            PyObject *pair = PySequence_Fast_GET_ITEM(fast, done + i);
            PyObject *data, *addr;
            if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2
                    || !PyBytes_Check(data = PyTuple_GET_ITEM(pair, 0))
                    || !PyBytes_Check(addr = PyTuple_GET_ITEM(pair, 1))) {
                Py_DECREF(fast);
                PyErr_SetString(PyExc_TypeError, "pairs must be (bytes, bytes) tuples");
                return NULL;
            }
            prepare_send(io, (unsigned int)i, PyBytes_AS_STRING(data),
                         (size_t)PyBytes_GET_SIZE(data), PyBytes_AS_STRING(addr),
                         (socklen_t)PyBytes_GET_SIZE(addr));
        }
        sent += chunk - send_all(io, fd, (unsigned int)chunk, &blocked);
        done += chunk;
    }
    Py_DECREF(fast);
    return PyLong_FromSsize_t(sent);
}

/* -- Response rate limiting --------------------------------------------------
 *
 * Theory of operation.  Every UDP answer (exactly bytes: a subclass such as
 * geodns.wire.Vouched passes untouched) is classified from its own header and
 * question: NXDOMAIN, error (any other non-zero rcode, or no question),
 * large (qtype ANY, or over RRL_LARGE bytes), positive (answers), NODATA (no
 * answer, AA), referral (no answer, AA clear, NS first in authority), else
 * error.  Its key is the client's network (address cut to the prefix), the
 * class, and for positive, NODATA and large the lower-cased query name:
 * identical answers are what a reflection attack repeats, while NXDOMAIN and
 * errors are counted per network whatever the name, so that random names do
 * not escape the limit.
 *
 * The key's SipHash-1-3 (a random key per limiter, so collisions cannot be
 * aimed) picks a set of RRL_WAYS entries and a 32-bit tag within it; a key
 * not found takes an empty entry or the one touched longest ago.  The table
 * never grows: table_size entries of sizeof(struct rrl_entry) bytes.  Each
 * entry is a token bucket of `rate` answers a second holding at most `rate`
 * (counted in thousandths, refilled per millisecond).  An answer without a
 * token is limited: every `slip`-th limited answer of an entry is sent
 * truncated (TC, the header and question only, no OPT: never larger than
 * the query), the others are dropped; slip 0 drops all.
 *
 * The networks with the most limited answers are counted apart, in two
 * generations of RRL_TOP_PERIOD ms (space-saving: a new network takes the
 * smallest slot's place when all are taken), for the status page.
 */

#define RRL_CLASSES 6
enum { C_POSITIVE, C_NODATA, C_NXDOMAIN, C_REFERRAL, C_ERROR, C_LARGE };
static const char *const rrl_class_names[RRL_CLASSES] = {
    "positive", "nodata", "nxdomain", "referral", "error", "large"};
#define RRL_WAYS 4
#define RRL_LARGE 1024      /* answers longer than this are "large" */
#define RRL_TOP 32          /* networks counted per generation */
#define RRL_TOP_PERIOD 30000
#define RRL_MAX_RATE 1000000
#define RRL_MAX_ENTRIES (1 << 26)
#define RRL_MAX_EXEMPT 4096

struct rrl_entry {
    uint32_t tag;       /* 0: empty */
    uint16_t limited;   /* limited answers since the last slip, mod slip */
    uint16_t unused;
    uint32_t stamp;     /* ms (monotonic, wrapping) the tokens were last refilled */
    int32_t tokens;     /* thousandths of an answer */
};

struct rrl_net {
    uint8_t family;     /* 4 or 6; 0: empty */
    uint8_t bits;
    uint8_t addr[16];
};

struct rrl_top {
    struct rrl_net net;
    unsigned long long count;
};

typedef struct {
    PyObject_HEAD
    struct rrl_entry *table;
    size_t nbuckets;
    int32_t rates[RRL_CLASSES];
    int slip, v4bits, v6bits;
    uint64_t k0, k1;
    struct rrl_net *exempt;
    Py_ssize_t nexempt;
    unsigned long long limited[RRL_CLASSES][2]; /* [class][0 dropped, 1 truncated] */
    struct rrl_top top[2][RRL_TOP];             /* [0] this generation, [1] the one before */
    uint32_t top_since;
    int top_hint;
} RateLimiter;

static PyTypeObject RateLimiterType;

#define ROTL64(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND do { \
        v0 += v1; v1 = ROTL64(v1, 13); v1 ^= v0; v0 = ROTL64(v0, 32); \
        v2 += v3; v3 = ROTL64(v3, 16); v3 ^= v2; \
        v0 += v3; v3 = ROTL64(v3, 21); v3 ^= v0; \
        v2 += v1; v1 = ROTL64(v1, 17); v1 ^= v2; v2 = ROTL64(v2, 32); \
    } while (0)

/* SipHash-1-3 (one compression round, three finalisation rounds). */
static uint64_t
siphash13(uint64_t k0, uint64_t k1, const uint8_t *p, size_t n)
{
    uint64_t v0 = k0 ^ 0x736f6d6570736575ULL, v1 = k1 ^ 0x646f72616e646f6dULL;
    uint64_t v2 = k0 ^ 0x6c7967656e657261ULL, v3 = k1 ^ 0x7465646279746573ULL;
    uint64_t m, last = (uint64_t)n << 56;
    size_t i, whole = n & ~(size_t)7;
    for (i = 0; i < whole; i += 8) {
        memcpy(&m, p + i, 8);
        v3 ^= m;
        SIPROUND;
        v0 ^= m;
    }
    for (i = 0; i < (n & 7); i++)
        last |= (uint64_t)p[whole + i] << (8 * i);
    v3 ^= last;
    SIPROUND;
    v0 ^= last;
    v2 ^= 0xff;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    return v0 ^ v1 ^ v2 ^ v3;
}

static uint32_t
now_ms(PyObject *now)
{
    struct timespec ts;
    if (now != NULL && now != Py_None) {
        double s = PyFloat_AsDouble(now);
        if (s == -1.0 && PyErr_Occurred())
            return 0;
        if (!(s >= 0.0 && s < 1e15)) {  /* NaN, negative, absurd: no undefined cast */
            PyErr_SetString(PyExc_ValueError, "now: seconds on a monotonic clock");
            return 0;
        }
        return (uint32_t)(uint64_t)(s * 1000.0);
    }
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint32_t)((uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u);
}

/* Keep the first `bits` bits of addr (len bytes), zero the rest. */
static void
cut(uint8_t *addr, int len, int bits)
{
    int i;
    for (i = 0; i < len; i++) {
        if (bits >= 8)
            bits -= 8;
        else {
            addr[i] &= (uint8_t)(0xff00u >> bits);
            bits = 0;
        }
    }
}

static int
within(const uint8_t *addr, const struct rrl_net *net)
{
    int full = net->bits / 8, rest = net->bits % 8;
    if (memcmp(addr, net->addr, (size_t)full) != 0)
        return 0;
    return rest == 0 || ((addr[full] ^ net->addr[full]) & (uint8_t)(0xff00u >> rest)) == 0;
}

/* The client's address from raw sockaddr bytes or an address tuple:
   0 on success (family 4 or 6), -1 for anything else (passed unlimited). */
static int
sockaddr_address(const char *s, Py_ssize_t n, struct rrl_net *out)
{
    sa_family_t family;
    if (n < (Py_ssize_t)sizeof(family))
        return -1;
    memcpy(&family, s, sizeof(family));
    if (family == AF_INET && n >= (Py_ssize_t)sizeof(struct sockaddr_in)) {
        memcpy(out->addr, s + offsetof(struct sockaddr_in, sin_addr), 4);
        out->family = 4;
    } else if (family == AF_INET6 && n >= (Py_ssize_t)sizeof(struct sockaddr_in6)) {
        memcpy(out->addr, s + offsetof(struct sockaddr_in6, sin6_addr), 16);
        out->family = 6;
    } else
        return -1;
    return 0;
}

static int
client_address(PyObject *addr, struct rrl_net *out)
{
    if (PyBytes_CheckExact(addr)) {
        if (sockaddr_address(PyBytes_AS_STRING(addr), PyBytes_GET_SIZE(addr), out) < 0)
            return -1;
    } else if (PyTuple_Check(addr) && PyTuple_GET_SIZE(addr) >= 2) {
        PyObject *host = PyTuple_GET_ITEM(addr, 0);
        const char *text;
        char buf[INET6_ADDRSTRLEN + 1], *scope;
        Py_ssize_t len;
        if (!PyUnicode_Check(host))
            return -1;
        text = PyUnicode_AsUTF8AndSize(host, &len);
        if (text == NULL) {
            PyErr_Clear();
            return -1;
        }
        if (len >= (Py_ssize_t)sizeof(buf))
            return -1;
        memcpy(buf, text, (size_t)len);
        buf[len] = 0;
        scope = strchr(buf, '%');
        if (scope != NULL)
            *scope = 0;
        if (inet_pton(AF_INET, buf, out->addr) == 1)
            out->family = 4;
        else if (inet_pton(AF_INET6, buf, out->addr) == 1)
            out->family = 6;
        else
            return -1;
    } else
        return -1;
    if (out->family == 6) {   /* an IPv4-mapped address is an IPv4 client */
        static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        if (memcmp(out->addr, mapped, 12) == 0) {
            memmove(out->addr, out->addr + 12, 4);
            out->family = 4;
        }
    }
    return 0;
}

/* Skip a name at p[i] (labels, or ending in a pointer): the offset after
   it, or -1 when it runs off the end or is malformed. */
static Py_ssize_t
skip_name(const uint8_t *p, Py_ssize_t n, Py_ssize_t i)
{
    while (i < n) {
        unsigned len = p[i];
        if (len == 0)
            return i + 1;
        if ((len & 0xC0) == 0xC0)
            return i + 2 <= n ? i + 2 : -1;
        if (len & 0xC0)
            return -1;
        i += 1 + (Py_ssize_t)len;
    }
    return -1;
}

/* The answer's class; *qend: where its question ends (0: no usable
   question), *nend: where the question's name ends. */
static int
classify(const uint8_t *p, Py_ssize_t n, Py_ssize_t *qend, Py_ssize_t *nend)
{
    Py_ssize_t i = 12;
    unsigned rcode, qtype = 0;
    *qend = *nend = 0;
    if (n < 12)
        return C_ERROR;
    if (p[4] | p[5]) {
        while (i < n && i - 12 <= 255) {
            unsigned len = p[i];
            if (len == 0) {
                if (i + 5 <= n) {
                    *nend = i + 1;
                    *qend = i + 5;
                    qtype = (unsigned)p[i + 1] << 8 | p[i + 2];
                }
                break;
            }
            if (len & 0xC0)
                break;  /* our answers never compress the question */
            i += 1 + (Py_ssize_t)len;
        }
    }
    rcode = p[3] & 0x0F;
    if (rcode == 3)
        return C_NXDOMAIN;
    if (rcode != 0 || *qend == 0)
        return C_ERROR;
    if (qtype == 255 || n > RRL_LARGE)
        return C_LARGE;
    if (p[6] | p[7])
        return C_POSITIVE;
    if (p[2] & 0x04)
        return C_NODATA;
    if (p[8] | p[9]) {
        Py_ssize_t t = skip_name(p, n, *qend);
        if (t > 0 && t + 2 <= n && p[t] == 0 && p[t + 1] == 2)
            return C_REFERRAL;
    }
    return C_ERROR;
}

/* Take a token for the key hashed to h: 1 if the answer may go, else 0
   with *slipped set when this limited answer is the slip-th. */
static int
take(RateLimiter *self, uint64_t h, int cls, uint32_t now, int *slipped)
{
    struct rrl_entry *set = self->table +
        (size_t)(((h & 0xffffffffu) * (uint64_t)self->nbuckets) >> 32) * RRL_WAYS;
    struct rrl_entry *e = NULL, *victim = NULL;
    uint32_t tag = (uint32_t)(h >> 32), oldest = 0;
    int32_t rate = self->rates[cls], full = rate * 1000;
    int w, empty = 0;
    if (tag == 0)
        tag = 1;
    for (w = 0; w < RRL_WAYS; w++) {
        struct rrl_entry *x = set + w;
        if (x->tag == tag) {
            e = x;
            break;
        }
        if (x->tag == 0) {
            if (!empty)
                victim = x;
            empty = 1;
        } else if (!empty && (victim == NULL || now - x->stamp > oldest)) {
            victim = x;
            oldest = now - x->stamp;
        }
    }
    if (e == NULL) {
        e = victim;
        e->tag = tag;
        e->limited = 0;
        e->stamp = now;
        e->tokens = full;
    } else {
        uint32_t dt = now - e->stamp;
        if (dt >= 1000) {
            e->tokens = full;
            e->stamp = now;
        } else if (dt > 0) {
            /* dt < 1000 and rate <= RRL_MAX_RATE: no overflow */
            int64_t t = (int64_t)e->tokens + (int64_t)dt * rate;
            e->tokens = t > full ? full : (int32_t)t;
            e->stamp = now;
        }
    }
    if (e->tokens >= 1000) {
        e->tokens -= 1000;
        return 1;
    }
    *slipped = 0;
    if (self->slip > 0 && ++e->limited >= self->slip) {
        e->limited = 0;
        *slipped = 1;
    }
    return 0;
}

static void
top_rotate(RateLimiter *self, uint32_t now)
{
    uint32_t age = now - self->top_since;
    if (age < RRL_TOP_PERIOD)
        return;
    if (age < 2 * RRL_TOP_PERIOD)
        memcpy(self->top[1], self->top[0], sizeof(self->top[0]));
    else
        memset(self->top[1], 0, sizeof(self->top[1]));
    memset(self->top[0], 0, sizeof(self->top[0]));
    self->top_since = now;
}

static void
top_count(RateLimiter *self, const struct rrl_net *net)
{
    struct rrl_top *slots = self->top[0], *least = NULL;
    int i, hint = self->top_hint;
    if (slots[hint].net.family == net->family &&
            memcmp(slots[hint].net.addr, net->addr, 16) == 0) {
        slots[hint].count++;
        return;
    }
    for (i = 0; i < RRL_TOP; i++) {
        struct rrl_top *s = slots + i;
        if (s->net.family == 0) {
            s->net = *net;
            s->count = 1;
            self->top_hint = i;
            return;
        }
        if (s->net.family == net->family && memcmp(s->net.addr, net->addr, 16) == 0) {
            s->count++;
            self->top_hint = i;
            return;
        }
        if (least == NULL || s->count < least->count)
            least = s;
    }
    least->net = *net;
    least->count++;
    self->top_hint = (int)(least - slots);
}

/* The limiter's verdict on one answer to a client: RRL_PASS, RRL_DROP, or
   RRL_SLIP with *tlen set to the length of the truncated answer to send
   instead (rrl_truncate).  Counts what it limits. */
enum { RRL_PASS, RRL_DROP, RRL_SLIP };

static int
rrl_judge(RateLimiter *self, const uint8_t *p, Py_ssize_t len, struct rrl_net net,
          uint32_t now, Py_ssize_t *tlen)
{
    Py_ssize_t qend, nend, klen, j;
    int cls, slipped, len_addr;
    uint8_t key[2 + 16 + 256];
    len_addr = net.family == 4 ? 4 : 16;
    if (net.family == 4)
        memset(net.addr + 4, 0, 12);  /* networks compare on 16 bytes */
    for (j = 0; j < self->nexempt; j++)
        if (self->exempt[j].family == net.family && within(net.addr, &self->exempt[j]))
            return RRL_PASS;
    net.bits = (uint8_t)(net.family == 4 ? self->v4bits : self->v6bits);
    cut(net.addr, len_addr, net.bits);
    cls = classify(p, len, &qend, &nend);
    key[0] = (uint8_t)cls;
    key[1] = net.family;
    memcpy(key + 2, net.addr, (size_t)len_addr);
    klen = 2 + len_addr;
    if (cls == C_POSITIVE || cls == C_NODATA || cls == C_LARGE) {
        for (j = 12; j < nend; j++) {
            uint8_t c = p[j];
            key[klen++] = (c >= 'A' && c <= 'Z') ? (uint8_t)(c | 0x20) : c;
        }
    }
    if (take(self, siphash13(self->k0, self->k1, key, (size_t)klen), cls, now, &slipped))
        return RRL_PASS;
    top_count(self, &net);
    self->limited[cls][slipped]++;
    if (!slipped)
        return RRL_DROP;
    *tlen = qend ? qend : (len < 12 ? len : 12);
    return RRL_SLIP;
}

/* The slipped answer in place: the first tlen bytes of the answer (its
   header and question), with TC set and no records. */
static void
rrl_truncate(uint8_t *t, Py_ssize_t tlen)
{
    if (tlen >= 12) {
        t[2] |= 0x02;
        t[4] = 0;
        t[5] = tlen > 12 ? 1 : 0;
        memset(t + 6, 0, 6);
    }
}

int
rrl_check(PyObject *limiter, uint8_t *answer, Py_ssize_t *len, const char *sockaddr,
          Py_ssize_t addrlen, uint32_t now)
{
    struct rrl_net net;
    Py_ssize_t tlen = 0;
    int verdict;
    if (sockaddr_address(sockaddr, addrlen, &net) < 0)
        return 1;
    if (net.family == 6) {   /* an IPv4-mapped address is an IPv4 client */
        static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        if (memcmp(net.addr, mapped, 12) == 0) {
            memmove(net.addr, net.addr + 12, 4);
            net.family = 4;
        }
    }
    verdict = rrl_judge((RateLimiter *)limiter, answer, *len, net, now, &tlen);
    if (verdict == RRL_DROP)
        return 0;
    if (verdict == RRL_SLIP) {
        rrl_truncate(answer, tlen);
        *len = tlen;
    }
    return 1;
}

uint32_t
rrl_now(PyObject *limiter)
{
    uint32_t now = now_ms(NULL);
    top_rotate((RateLimiter *)limiter, now);
    return now;
}

int
rrl_is_limiter(PyObject *obj)
{
    return Py_IS_TYPE(obj, &RateLimiterType);
}

PyDoc_STRVAR(rrl_filter_doc,
"filter(pairs, now=None, /) -> list\n\n"
"The (answer, address) pairs that may be sent: those over the rate are left\n"
"out, or (every slip-th) replaced by a truncated answer.  Answers that are\n"
"not exactly bytes, and addresses that are neither sockaddr bytes nor an\n"
"address tuple, pass untouched.  `pairs` itself is returned when nothing was\n"
"limited.  `now`: seconds on a monotonic clock (tests); default: the clock.");

static PyObject *
rrl_filter(RateLimiter *self, PyObject *args)
{
    PyObject *pairs, *now_arg = NULL, *out = NULL;
    Py_ssize_t i, n;
    uint32_t now;
    if (!PyArg_ParseTuple(args, "O!|O:filter", &PyList_Type, &pairs, &now_arg))
        return NULL;
    now = now_ms(now_arg);
    if (PyErr_Occurred())
        return NULL;
    top_rotate(self, now);
    n = PyList_GET_SIZE(pairs);
    for (i = 0; i < n; i++) {
        PyObject *pair = PyList_GET_ITEM(pairs, i), *data, *addr;
        const uint8_t *p;
        Py_ssize_t len, tlen = 0;
        struct rrl_net net;
        int verdict;
        if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2)
            goto pass;
        data = PyTuple_GET_ITEM(pair, 0);
        addr = PyTuple_GET_ITEM(pair, 1);
        if (!PyBytes_CheckExact(data) || client_address(addr, &net) < 0)
            goto pass;
        p = (const uint8_t *)PyBytes_AS_STRING(data);
        len = PyBytes_GET_SIZE(data);
        verdict = rrl_judge(self, p, len, net, now, &tlen);
        if (verdict == RRL_PASS)
            goto pass;
        /* limited */
        if (out == NULL) {
            out = PyList_GetSlice(pairs, 0, i);
            if (out == NULL)
                return NULL;
        }
        if (verdict == RRL_SLIP) {
            PyObject *tc = PyBytes_FromStringAndSize(NULL, tlen), *tpair;
            if (tc == NULL)
                goto fail;
            memcpy(PyBytes_AS_STRING(tc), p, (size_t)tlen);
            rrl_truncate((uint8_t *)PyBytes_AS_STRING(tc), tlen);
            tpair = PyTuple_Pack(2, tc, addr);
            Py_DECREF(tc);
            if (tpair == NULL)
                goto fail;
            if (PyList_Append(out, tpair) < 0) {
                Py_DECREF(tpair);
                goto fail;
            }
            Py_DECREF(tpair);
        }
        continue;
    pass:
        if (out != NULL && PyList_Append(out, pair) < 0)
            goto fail;
    }
    if (out == NULL) {
        Py_INCREF(pairs);
        return pairs;
    }
    return out;
fail:
    Py_DECREF(out);
    return NULL;
}

static int
top_order(const void *a, const void *b)
{
    unsigned long long x = ((const struct rrl_top *)a)->count;
    unsigned long long y = ((const struct rrl_top *)b)->count;
    return x < y ? 1 : x > y ? -1 : 0;
}

PyDoc_STRVAR(rrl_top_doc,
"top(n, now=None, /) -> list[tuple[str, int]]\n\n"
"The networks with the most limited answers in the last 30 to 60 seconds,\n"
"most first: ('192.0.2.0/24', limited answers), at most n of them.");

static PyObject *
rrl_top(RateLimiter *self, PyObject *args)
{
    struct rrl_top merged[2 * RRL_TOP];
    PyObject *now_arg = NULL, *list;
    Py_ssize_t want;
    uint32_t now;
    int g, i, j, count = 0;
    if (!PyArg_ParseTuple(args, "n|O:top", &want, &now_arg))
        return NULL;
    now = now_ms(now_arg);
    if (PyErr_Occurred())
        return NULL;
    top_rotate(self, now);
    for (g = 0; g < 2; g++) {
        for (i = 0; i < RRL_TOP; i++) {
            const struct rrl_top *s = &self->top[g][i];
            if (s->net.family == 0)
                continue;
            for (j = 0; j < count; j++)
                if (merged[j].net.family == s->net.family &&
                        merged[j].net.bits == s->net.bits &&
                        memcmp(merged[j].net.addr, s->net.addr, 16) == 0)
                    break;
            if (j == count)
                merged[count++] = *s;
            else
                merged[j].count += s->count;
        }
    }
    qsort(merged, (size_t)count, sizeof(merged[0]), top_order);
    if (want < 0)
        want = 0;
    if (want > count)
        want = count;
    list = PyList_New(want);
    if (list == NULL)
        return NULL;
    for (i = 0; i < want; i++) {
        char text[INET6_ADDRSTRLEN + 8];
        size_t used;
        PyObject *item;
        inet_ntop(merged[i].net.family == 4 ? AF_INET : AF_INET6, merged[i].net.addr,
                  text, INET6_ADDRSTRLEN);
        used = strlen(text);
        snprintf(text + used, sizeof(text) - used, "/%u", (unsigned)merged[i].net.bits);
        item = Py_BuildValue("(sK)", text, merged[i].count);
        if (item == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, i, item);
    }
    return list;
}

PyDoc_STRVAR(rrl_counters_doc,
"counters() -> dict[tuple[str, str], int]\n\n"
"Limited answers since the limiter was made, by (class, action): action\n"
"'dropped' or 'truncated'; every class and action, zero included.");

static PyObject *
rrl_counters(RateLimiter *self, PyObject *Py_UNUSED(ignored))
{
    static const char *const actions[2] = {"dropped", "truncated"};
    PyObject *dict = PyDict_New();
    int c, a;
    if (dict == NULL)
        return NULL;
    for (c = 0; c < RRL_CLASSES; c++) {
        for (a = 0; a < 2; a++) {
            PyObject *k = Py_BuildValue("(ss)", rrl_class_names[c], actions[a]);
            PyObject *v = PyLong_FromUnsignedLongLong(self->limited[c][a]);
            int bad = k == NULL || v == NULL || PyDict_SetItem(dict, k, v) < 0;
            Py_XDECREF(k);
            Py_XDECREF(v);
            if (bad) {
                Py_DECREF(dict);
                return NULL;
            }
        }
    }
    return dict;
}

PyDoc_STRVAR(rrl_used_doc,
"used() -> int\n\nEntries of the table in use (at most `size`).");

static PyObject *
rrl_used(RateLimiter *self, PyObject *Py_UNUSED(ignored))
{
    size_t i, total = self->nbuckets * RRL_WAYS, used = 0;
    for (i = 0; i < total; i++)
        used += self->table[i].tag != 0;
    return PyLong_FromSize_t(used);
}

static PyObject *
rrl_size(RateLimiter *self, void *Py_UNUSED(closure))
{
    return PyLong_FromSize_t(self->nbuckets * RRL_WAYS);
}

static PyObject *
rrl_entry_size(RateLimiter *Py_UNUSED(self), void *Py_UNUSED(closure))
{
    return PyLong_FromSize_t(sizeof(struct rrl_entry));
}

/* "192.0.2.0/24" or "2001:db8::/32" into net (host bits cleared): 0, or -1
   with ValueError set. */
static int
parse_network(PyObject *item, struct rrl_net *net)
{
    const char *text;
    char buf[INET6_ADDRSTRLEN + 8], *slash, *end;
    Py_ssize_t len;
    long bits;
    if (!PyUnicode_Check(item)) {
        PyErr_SetString(PyExc_TypeError, "exempt networks are strings (192.0.2.0/24)");
        return -1;
    }
    text = PyUnicode_AsUTF8AndSize(item, &len);
    if (text == NULL)
        return -1;
    if (len >= (Py_ssize_t)sizeof(buf))
        goto bad;
    memcpy(buf, text, (size_t)len);
    buf[len] = 0;
    memset(net, 0, sizeof(*net));
    slash = strchr(buf, '/');
    if (slash != NULL)
        *slash = 0;
    if (inet_pton(AF_INET, buf, net->addr) == 1)
        net->family = 4;
    else if (inet_pton(AF_INET6, buf, net->addr) == 1)
        net->family = 6;
    else
        goto bad;
    bits = net->family == 4 ? 32 : 128;
    if (slash != NULL) {
        errno = 0;
        bits = strtol(slash + 1, &end, 10);
        if (errno || end == slash + 1 || *end || bits < 0 || bits > (net->family == 4 ? 32 : 128))
            goto bad;
    }
    net->bits = (uint8_t)bits;
    cut(net->addr, net->family == 4 ? 4 : 16, net->bits);
    return 0;
bad:
    PyErr_Format(PyExc_ValueError, "not a network: %R", item);
    return -1;
}

static int
rrl_init(RateLimiter *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"rate", "slip", "ipv4_prefix", "ipv6_prefix", "table_size",
                             "exempt", "rates", NULL};
    long rate, slip, v4, v6;
    Py_ssize_t size, i;
    PyObject *exempt = NULL, *rates = Py_None, *fast;
    uint64_t key[2];
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "llllnO|O:RateLimiter", kwlist, &rate, &slip,
                                     &v4, &v6, &size, &exempt, &rates))
        return -1;
    if (self->table != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "a RateLimiter is made once");
        return -1;
    }
    if (rate < 1 || rate > RRL_MAX_RATE || slip < 0 || slip > 10 || v4 < 0 || v4 > 32 ||
            v6 < 0 || v6 > 128 || size < RRL_WAYS || size > RRL_MAX_ENTRIES ||
            size % RRL_WAYS) {
        PyErr_Format(PyExc_ValueError, "RateLimiter: rate 1..%d, slip 0..10, ipv4_prefix "
                     "0..32, ipv6_prefix 0..128, table_size a multiple of %d up to %d",
                     RRL_MAX_RATE, RRL_WAYS, RRL_MAX_ENTRIES);
        return -1;
    }
    for (i = 0; i < RRL_CLASSES; i++)
        self->rates[i] = (int32_t)rate;
    if (rates != Py_None) {
        fast = PySequence_Fast(rates, "rates: a rate per class");
        if (fast == NULL)
            return -1;
        if (PySequence_Fast_GET_SIZE(fast) != RRL_CLASSES) {
            Py_DECREF(fast);
            PyErr_Format(PyExc_ValueError, "rates: one per class (%d)", RRL_CLASSES);
            return -1;
        }
        for (i = 0; i < RRL_CLASSES; i++) {
            long r = PyLong_AsLong(PySequence_Fast_GET_ITEM(fast, i));
            if (r == -1 && PyErr_Occurred()) {
                Py_DECREF(fast);
                return -1;
            }
            if (r < 1 || r > RRL_MAX_RATE) {
                Py_DECREF(fast);
                PyErr_Format(PyExc_ValueError, "rates: 1..%d", RRL_MAX_RATE);
                return -1;
            }
            self->rates[i] = (int32_t)r;
        }
        Py_DECREF(fast);
    }
    fast = PySequence_Fast(exempt, "exempt: a sequence of networks");
    if (fast == NULL)
        return -1;
    self->nexempt = PySequence_Fast_GET_SIZE(fast);
    if (self->nexempt > RRL_MAX_EXEMPT) {
        Py_DECREF(fast);
        PyErr_Format(PyExc_ValueError, "exempt: at most %d networks", RRL_MAX_EXEMPT);
        return -1;
    }
    self->exempt = PyMem_Calloc((size_t)self->nexempt + 1, sizeof(struct rrl_net));
    if (self->exempt == NULL) {
        Py_DECREF(fast);
        PyErr_NoMemory();
        return -1;
    }
    for (i = 0; i < self->nexempt; i++) {
        if (parse_network(PySequence_Fast_GET_ITEM(fast, i), &self->exempt[i]) < 0) {
            Py_DECREF(fast);
            return -1;
        }
    }
    Py_DECREF(fast);
    if (getrandom(key, sizeof(key), 0) != (ssize_t)sizeof(key)) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    self->k0 = key[0];
    self->k1 = key[1];
    self->slip = (int)slip;
    self->v4bits = (int)v4;
    self->v6bits = (int)v6;
    self->nbuckets = (size_t)size / RRL_WAYS;
    self->table = PyMem_Calloc((size_t)size, sizeof(struct rrl_entry));
    if (self->table == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    self->top_since = now_ms(NULL);
    return 0;
}

static void
rrl_dealloc(RateLimiter *self)
{
    PyMem_Free(self->table);
    PyMem_Free(self->exempt);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef rrl_methods[] = {
    {"filter", (PyCFunction)rrl_filter, METH_VARARGS, rrl_filter_doc},
    {"top", (PyCFunction)rrl_top, METH_VARARGS, rrl_top_doc},
    {"counters", (PyCFunction)rrl_counters, METH_NOARGS, rrl_counters_doc},
    {"used", (PyCFunction)rrl_used, METH_NOARGS, rrl_used_doc},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef rrl_getset[] = {
    {"size", (getter)rrl_size, NULL, "entries in the table (fixed)", NULL},
    {"entry_size", (getter)rrl_entry_size, NULL, "bytes per entry", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyDoc_STRVAR(rrl_doc,
"RateLimiter(rate, slip, ipv4_prefix, ipv6_prefix, table_size, exempt, rates=None)\n\n"
"Response rate limiting for UDP answers (docs/abuse.md).  rate: answers a\n"
"second per client network, class and (for positive, NODATA and large\n"
"answers) query name, with as many in a burst; rates: one per class instead\n"
"(in the order of CLASSES); slip: every slip-th limited answer is sent\n"
"truncated (0: none); table_size: entries (a multiple of 4), fixed; exempt:\n"
"networks never limited ('192.0.2.0/24').");

static PyTypeObject RateLimiterType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "geodns._udpbatch.RateLimiter",
    .tp_doc = rrl_doc,
    .tp_basicsize = sizeof(RateLimiter),
    .tp_itemsize = 0,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)rrl_init,
    .tp_dealloc = (destructor)rrl_dealloc,
    .tp_methods = rrl_methods,
    .tp_getset = rrl_getset,
};

/*
 * canonical_key(wire) -> bytes: geodns.names.canonical_key in C.  The labels
 * from the root, a zero byte in a label written 00 02, 00 01 between
 * labels.  Anything after the name's root label is ignored (the data plane
 * passes its look-up key: the name, then type and class).  A malformed name
 * (a length past the end, no root, over 255 bytes) raises ValueError; the
 * data plane only passes names it has walked already.
 */
#define CANONICAL_MAX 512  /* a key of a name of at most 255 bytes fits */

/* The canonical key of the name at the start of w[0..n) into out[]; its
 * size, or -1 for a malformed name. */
static Py_ssize_t
canonical_into(const unsigned char *w, Py_ssize_t n, unsigned char *out)
{
    Py_ssize_t i = 0, count = 0, k;
    Py_ssize_t starts[128];
    unsigned char *o = out;
    int plain;
    while (1) {
        if (i >= n || i >= 255 || count >= 128)
            return -1;
        if (w[i] == 0)
            break;
        if (i + 1 + w[i] > n)
            return -1;
        starts[count++] = i;
        i += 1 + w[i];
    }
    plain = memchr(w, 0, (size_t)i) == NULL;  /* no zero byte inside a label */
    for (k = count - 1; k >= 0; k--) {
        const unsigned char *label = w + starts[k] + 1;
        Py_ssize_t len = w[starts[k]], j;
        if (k != count - 1) {
            *o++ = 0;
            *o++ = 1;
        }
        if (plain) {
            memcpy(o, label, (size_t)len);
            o += len;
            continue;
        }
        for (j = 0; j < len; j++) {
            if (label[j] == 0) {
                *o++ = 0;
                *o++ = 2;
            } else {
                *o++ = label[j];
            }
        }
    }
    return o - out;
}

PyDoc_STRVAR(canonical_key_doc,
"canonical_key(wire) -> bytes: a key that sorts as DNSSEC's canonical order sorts names.");

static PyObject *
canonical_key(PyObject *self, PyObject *arg)
{
    unsigned char out[CANONICAL_MAX];
    Py_ssize_t size;
    (void)self;
    if (!PyBytes_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "canonical_key() takes bytes");
        return NULL;
    }
    size = canonical_into((const unsigned char *)PyBytes_AS_STRING(arg),
                          PyBytes_GET_SIZE(arg), out);
    if (size < 0) {
        PyErr_SetString(PyExc_ValueError, "not a wire-format name");
        return NULL;
    }
    return PyBytes_FromStringAndSize((const char *)out, size);
}

/*
 * CanonicalIndex(keys): the canonical keys of an NSEC chain's names, sorted,
 * in one buffer.  cover(wire) is the position of the last key that sorts at
 * or before the name's (bisect_right - 1, so -1 before the first): the chain
 * entry whose NSEC covers or matches the name.  The sign stage calls it for
 * every query with DO whose denial depends on the name; one call, no key
 * object made.  geodns.names.CanonicalIndex is the same in Python.
 */
typedef struct {
    PyObject_HEAD
    Py_ssize_t count;
    Py_ssize_t *offsets;      /* count + 1 offsets into data */
    unsigned char *data;
} CanonicalIndex;

static int
cindex_init(CanonicalIndex *self, PyObject *args, PyObject *kwds)
{
    PyObject *keys, *seq;
    Py_ssize_t i, n, total = 0;
    static char *kwlist[] = {"keys", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O:CanonicalIndex", kwlist, &keys))
        return -1;
    seq = PySequence_Fast(keys, "CanonicalIndex() takes a sequence of bytes");
    if (seq == NULL)
        return -1;
    n = PySequence_Fast_GET_SIZE(seq);
    for (i = 0; i < n; i++) {
        PyObject *k = PySequence_Fast_GET_ITEM(seq, i);
        if (!PyBytes_Check(k)) {
            Py_DECREF(seq);
            PyErr_SetString(PyExc_TypeError, "CanonicalIndex() takes a sequence of bytes");
            return -1;
        }
        total += PyBytes_GET_SIZE(k);
    }
    PyMem_Free(self->offsets);
    PyMem_Free(self->data);
    self->offsets = PyMem_Malloc((size_t)(n + 1) * sizeof(Py_ssize_t));
    self->data = PyMem_Malloc(total ? (size_t)total : 1);
    self->count = 0;
    if (self->offsets == NULL || self->data == NULL) {
        Py_DECREF(seq);
        PyErr_NoMemory();
        return -1;
    }
    total = 0;
    for (i = 0; i < n; i++) {
        PyObject *k = PySequence_Fast_GET_ITEM(seq, i);
        Py_ssize_t size = PyBytes_GET_SIZE(k);
        self->offsets[i] = total;
        memcpy(self->data + total, PyBytes_AS_STRING(k), (size_t)size);
        total += size;
    }
    self->offsets[n] = total;
    Py_DECREF(seq);
    for (i = 1; i < n; i++) {
        const unsigned char *a = self->data + self->offsets[i - 1];
        const unsigned char *b = self->data + self->offsets[i];
        Py_ssize_t la = self->offsets[i] - self->offsets[i - 1];
        Py_ssize_t lb = self->offsets[i + 1] - self->offsets[i];
        int c = memcmp(a, b, (size_t)(la < lb ? la : lb));
        if (c > 0 || (c == 0 && la > lb)) {
            PyErr_SetString(PyExc_ValueError, "CanonicalIndex() keys must be sorted");
            return -1;
        }
    }
    self->count = n;
    return 0;
}

static void
cindex_dealloc(CanonicalIndex *self)
{
    PyMem_Free(self->offsets);
    PyMem_Free(self->data);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

PyDoc_STRVAR(cover_doc,
"cover(wire) -> int: the position of the last key at or before the name's canonical key (-1: none).");

/* The cover of the name at the start of arg (bytes); -2 with an exception
 * set for what is not a name. */
static Py_ssize_t
cindex_position(CanonicalIndex *self, PyObject *arg)
{
    unsigned char key[CANONICAL_MAX];
    Py_ssize_t size, lo = 0, hi = self->count;
    if (!PyBytes_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "cover() takes bytes");
        return -2;
    }
    size = canonical_into((const unsigned char *)PyBytes_AS_STRING(arg),
                          PyBytes_GET_SIZE(arg), key);
    if (size < 0) {
        PyErr_SetString(PyExc_ValueError, "not a wire-format name");
        return -2;
    }
    while (lo < hi) {  /* bisect_right */
        Py_ssize_t mid = (lo + hi) / 2;
        Py_ssize_t start = self->offsets[mid], len = self->offsets[mid + 1] - start;
        int c = memcmp(key, self->data + start, (size_t)(size < len ? size : len));
        if (c < 0 || (c == 0 && size < len))
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo - 1;
}

static PyObject *
cindex_cover(CanonicalIndex *self, PyObject *arg)
{
    Py_ssize_t i = cindex_position(self, arg);
    return i == -2 ? NULL : PyLong_FromSsize_t(i);
}

/*
 * Finder: index.finder(kept).get(wire) is kept.get(index.cover(wire)), in
 * one call: what the sign stage does per query for a denial that depends
 * on the name (geodns.compile.Proof keeps its answers by cover in kept).
 */
typedef struct {
    PyObject_HEAD
    CanonicalIndex *index;
    PyObject *kept;  /* a dict */
} Finder;

static PyTypeObject FinderType;

/* What a Finder keeps for the cover of the name at the start of key (a
 * borrowed reference), or NULL: nothing kept, or an error (set). */
PyObject *
finder_find(PyObject *finder, PyObject *key)
{
    Finder *self = (Finder *)finder;
    PyObject *at, *found;
    Py_ssize_t i = cindex_position(self->index, key);
    if (i == -2)
        return NULL;
    at = PyLong_FromSsize_t(i);
    if (at == NULL)
        return NULL;
    found = PyDict_GetItemWithError(self->kept, at);
    Py_DECREF(at);
    return found;
}

int
is_finder(PyObject *obj)
{
    return Py_IS_TYPE(obj, &FinderType);
}

static PyObject *
cindex_finder(CanonicalIndex *self, PyObject *kept)
{
    Finder *f;
    if (!PyDict_Check(kept)) {
        PyErr_SetString(PyExc_TypeError, "finder() takes a dict");
        return NULL;
    }
    f = PyObject_New(Finder, &FinderType);
    if (f == NULL)
        return NULL;
    Py_INCREF(self);
    Py_INCREF(kept);
    f->index = self;
    f->kept = kept;
    return (PyObject *)f;
}

static void
finder_dealloc(Finder *self)
{
    Py_DECREF(self->index);
    Py_DECREF(self->kept);
    PyObject_Free(self);
}

PyDoc_STRVAR(finder_get_doc,
"get(wire) -> object | None: the kept dict's value for the name's cover, or None.");

static PyObject *
finder_get(Finder *self, PyObject *arg)
{
    PyObject *found = finder_find((PyObject *)self, arg);
    if (found == NULL) {
        if (PyErr_Occurred())
            return NULL;
        Py_RETURN_NONE;
    }
    Py_INCREF(found);
    return found;
}

static PyMethodDef finder_methods[] = {
    {"get", (PyCFunction)finder_get, METH_O, finder_get_doc},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject FinderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "geodns._udpbatch.Finder",
    .tp_doc = "What CanonicalIndex.finder(kept) returns: get(wire) is kept.get(cover(wire)).",
    .tp_basicsize = sizeof(Finder),
    .tp_itemsize = 0,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_dealloc = (destructor)finder_dealloc,
    .tp_methods = finder_methods,
};

PyDoc_STRVAR(finder_doc,
"finder(kept: dict) -> Finder: whose get(wire) is kept.get(cover(wire)), in one call.");

static Py_ssize_t
cindex_len(CanonicalIndex *self)
{
    return self->count;
}

static PyMethodDef cindex_methods[] = {
    {"cover", (PyCFunction)cindex_cover, METH_O, cover_doc},
    {"finder", (PyCFunction)cindex_finder, METH_O, finder_doc},
    {NULL, NULL, 0, NULL},
};

static PySequenceMethods cindex_as_sequence = {
    .sq_length = (lenfunc)cindex_len,
};

PyDoc_STRVAR(cindex_doc,
"CanonicalIndex(keys): sorted canonical keys (geodns.names.canonical_key), searched by cover().");

static PyTypeObject CanonicalIndexType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "geodns._udpbatch.CanonicalIndex",
    .tp_doc = cindex_doc,
    .tp_basicsize = sizeof(CanonicalIndex),
    .tp_itemsize = 0,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)cindex_init,
    .tp_dealloc = (destructor)cindex_dealloc,
    .tp_methods = cindex_methods,
    .tp_as_sequence = &cindex_as_sequence,
};

static PyMethodDef methods[] = {
    {"recv_batch", recv_batch, METH_VARARGS, recv_batch_doc},
    {"send_batch", send_batch, METH_VARARGS, send_batch_doc},
    {"canonical_key", canonical_key, METH_O, canonical_key_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "geodns._udpbatch",
    .m_doc = "Batched UDP receive and send (recvmmsg/sendmmsg), response rate limiting, "
             "and DNSSEC's canonical order of names.",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC
PyInit__udpbatch(void)
{
    PyObject *m, *classes;
    int i;
    if (PyType_Ready(&RateLimiterType) < 0 || PyType_Ready(&CanonicalIndexType) < 0
            || PyType_Ready(&FinderType) < 0)
        return NULL;
    m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    classes = PyTuple_New(RRL_CLASSES);
    if (classes == NULL)
        goto fail;
    for (i = 0; i < RRL_CLASSES; i++) {
        PyObject *name = PyUnicode_FromString(rrl_class_names[i]);
        if (name == NULL) {
            Py_DECREF(classes);
            goto fail;
        }
        PyTuple_SET_ITEM(classes, i, name);
    }
    if (PyModule_AddObject(m, "CLASSES", classes) < 0) {
        Py_DECREF(classes);
        goto fail;
    }
    Py_INCREF(&RateLimiterType);
    if (PyModule_AddObject(m, "RateLimiter", (PyObject *)&RateLimiterType) < 0) {
        Py_DECREF(&RateLimiterType);
        goto fail;
    }
    if (plane_add_types(m) < 0)
        goto fail;
    Py_INCREF(&CanonicalIndexType);
    if (PyModule_AddObject(m, "CanonicalIndex", (PyObject *)&CanonicalIndexType) < 0) {
        Py_DECREF(&CanonicalIndexType);
        goto fail;
    }
    return m;
fail:
    Py_DECREF(m);
    return NULL;
}
