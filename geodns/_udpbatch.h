/* What geodns/_udpbatch.c and geodns/_plane.c (one module) share. */
#ifndef GEODNS_UDPBATCH_H
#define GEODNS_UDPBATCH_H

#include <Python.h>
#include <stdint.h>
#include <sys/socket.h>

#define BATCH 64
#define BUFSIZE 4096 /* larger queries are dropped (MSG_TRUNC) */
/* The buffers are BUFSIZE + one cache line apart, so that their first lines
 * (where a query's header and question are, and an answer's) fall in
 * different sets of the L1 cache: 4096 bytes apart, every buffer's first
 * line competes for the same set (8 ways on AMD Zen). */
#define BUFSTRIDE (BUFSIZE + 64)

/* The receive and send vectors, one set per thread (the event loop's, and
 * each UDP socket's reader: geodns.server.transport.UDPPlaneThread), made on
 * its first use and freed when the thread ends.  A call that fills them may
 * run Python code before it is done with them (an allocation can start the
 * cyclic collector, whose finalizers can let another thread run), so no two
 * threads may share them. */
struct io {
    char bufs[BATCH][BUFSTRIDE];
    struct sockaddr_storage addrs[BATCH];
    struct mmsghdr rmsgs[BATCH];
    struct iovec riov[BATCH];
    struct mmsghdr smsgs[BATCH];
    struct iovec siov[BATCH];
    unsigned char outbufs[BATCH][BUFSTRIDE];
};

/* This thread's vectors; NULL (MemoryError set) when they cannot be made. */
struct io *thread_io(void);

/* Point rmsgs at bufs and addrs, ready for recvmmsg. */
void recv_prepare(struct io *io);

/* Message k of smsgs: buf to the sockaddr name.  send_all sends the first n
 * with sendmmsg and returns how many were not sent: a datagram the kernel
 * refuses is skipped, a full buffer ends it (*blocked set, unless NULL). */
void prepare_send(struct io *io, unsigned int k, void *buf, size_t len, void *name,
                  socklen_t namelen);
Py_ssize_t send_all(struct io *io, int fd, unsigned int n, int *blocked);

/* Response rate limiting of one answer (a RateLimiter): 1 to send it (*len
 * may have become that of its truncated form, rewritten in place), 0 to drop
 * it.  rrl_now reads the limiter's clock, once per batch. */
int rrl_is_limiter(PyObject *obj);
uint32_t rrl_now(PyObject *limiter);
int rrl_check(PyObject *limiter, uint8_t *answer, Py_ssize_t *len, const char *sockaddr,
              Py_ssize_t addrlen, uint32_t now);

/* A DNSSEC proof's Finder (geodns.names): what it keeps for the cover of
 * the name at the start of key (borrowed), or NULL (nothing, or an error). */
int is_finder(PyObject *obj);
PyObject *finder_find(PyObject *finder, PyObject *key);

/* Adds SteerRanges and Plane to the module (geodns/_plane.c). */
int plane_add_types(PyObject *m);

#endif
