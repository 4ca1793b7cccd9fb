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
 */
#define PY_SSIZE_T_CLEAN
#define _GNU_SOURCE
#include <Python.h>
#include <errno.h>
#include <string.h>
#include <sys/socket.h>

#define BATCH 64
#define BUFSIZE 4096 /* larger queries are dropped (MSG_TRUNC) */

static char bufs[BATCH][BUFSIZE];
static struct sockaddr_storage addrs[BATCH];
static struct mmsghdr rmsgs[BATCH];
static struct iovec riov[BATCH];
static struct mmsghdr smsgs[BATCH];
static struct iovec siov[BATCH];

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
    for (i = 0; i < BATCH; i++) {
        riov[i].iov_base = bufs[i];
        riov[i].iov_len = BUFSIZE;
        memset(&rmsgs[i].msg_hdr, 0, sizeof(struct msghdr));
        rmsgs[i].msg_hdr.msg_iov = &riov[i];
        rmsgs[i].msg_hdr.msg_iovlen = 1;
        rmsgs[i].msg_hdr.msg_name = &addrs[i];
        rmsgs[i].msg_hdr.msg_namelen = sizeof(struct sockaddr_storage);
    }
    n = recvmmsg(fd, rmsgs, BATCH, MSG_DONTWAIT, NULL);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            return PyList_New(0);
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    list = PyList_New(n);
    if (list == NULL)
        return NULL;
    for (i = 0; i < n; i++) {
        Py_ssize_t len = (rmsgs[i].msg_hdr.msg_flags & MSG_TRUNC) ? 0 : rmsgs[i].msg_len;
        PyObject *data = PyBytes_FromStringAndSize(bufs[i], len);
        PyObject *addr = PyBytes_FromStringAndSize((const char *)&addrs[i],
                                                   rmsgs[i].msg_hdr.msg_namelen);
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

static PyObject *
send_batch(PyObject *Py_UNUSED(self), PyObject *args)
{
    int fd;
    PyObject *seq, *fast;
    Py_ssize_t total, done = 0, sent = 0;
    if (!PyArg_ParseTuple(args, "iO", &fd, &seq))
        return NULL;
    fast = PySequence_Fast(seq, "send_batch needs a sequence of (data, sockaddr) pairs");
    if (fast == NULL)
        return NULL;
    total = PySequence_Fast_GET_SIZE(fast);
    while (done < total) {
        Py_ssize_t chunk = total - done < BATCH ? total - done : BATCH;
        Py_ssize_t i;
        int n;
        for (i = 0; i < chunk; i++) {
            PyObject *pair = PySequence_Fast_GET_ITEM(fast, done + i);
            PyObject *data, *addr;
            if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2) {
                Py_DECREF(fast);
                PyErr_SetString(PyExc_TypeError, "pairs must be (bytes, bytes) tuples");
                return NULL;
            }
            data = PyTuple_GET_ITEM(pair, 0);
            addr = PyTuple_GET_ITEM(pair, 1);
            if (!PyBytes_Check(data) || !PyBytes_Check(addr)) {
                Py_DECREF(fast);
                PyErr_SetString(PyExc_TypeError, "pairs must be (bytes, bytes) tuples");
                return NULL;
            }
            siov[i].iov_base = PyBytes_AS_STRING(data);
            siov[i].iov_len = PyBytes_GET_SIZE(data);
            memset(&smsgs[i].msg_hdr, 0, sizeof(struct msghdr));
            smsgs[i].msg_hdr.msg_iov = &siov[i];
            smsgs[i].msg_hdr.msg_iovlen = 1;
            smsgs[i].msg_hdr.msg_name = PyBytes_AS_STRING(addr);
            smsgs[i].msg_hdr.msg_namelen = (socklen_t)PyBytes_GET_SIZE(addr);
        }
        n = sendmmsg(fd, smsgs, (unsigned int)chunk, MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            /* EAGAIN: buffer full; other errors (e.g. an unreachable
               address) concern one datagram: skip it and go on. */
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                break;
            }
            done += 1;
            continue;
        }
        sent += n;
        done += n;
    }
    Py_DECREF(fast);
    return PyLong_FromSsize_t(sent);
}

static PyMethodDef methods[] = {
    {"recv_batch", recv_batch, METH_VARARGS, recv_batch_doc},
    {"send_batch", send_batch, METH_VARARGS, send_batch_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "geodns._udpbatch",
    .m_doc = "Batched UDP receive and send (recvmmsg/sendmmsg).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC
PyInit__udpbatch(void)
{
    return PyModule_Create(&module);
}
