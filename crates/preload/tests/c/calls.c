/* Every socket call ustack's LD_PRELOAD library serves, with each result and errno
 * printed: run once on the kernel and once under `ustack run`, the two outputs must be
 * the same (crates/cli/tests/run.rs compares them; docs/linux-differences.md lists what
 * may differ). Addresses and fd numbers that differ between the runs by construction are
 * not printed, only what they say (family, "port set").
 *
 * Usage: calls PEER_IP ECHO_PORT UDP_ECHO_PORT LISTEN_PORT
 *   PEER_IP has a TCP echo server on ECHO_PORT and a UDP echo server on UDP_ECHO_PORT;
 *   after printing "listening", the program waits for one client on LISTEN_PORT that
 *   sends "hello", reads the echo, and closes. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <unistd.h>

/* One line per call: its name, its result (or -1) and errno's name. */
static void show(const char *what, long result) {
    if (result < 0)
        printf("%-44s -1 %s\n", what, strerrorname_np(errno));
    else
        printf("%-44s %ld\n", what, result);
    fflush(stdout);
}

/* For calls that return an fd: "fd" rather than its number. */
static int show_fd(const char *what, int fd) {
    if (fd < 0)
        show(what, fd);
    else {
        printf("%-44s fd\n", what);
        fflush(stdout);
    }
    return fd;
}

static int int_opt(int fd, int level, int name) {
    int v = -1;
    socklen_t len = sizeof v;
    if (getsockopt(fd, level, name, &v, &len) < 0)
        return -1000 - errno;
    return v;
}

static struct sockaddr_in v4(const char *ip, int port) {
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, ip, &a.sin_addr);
    return a;
}

static void show_addr(const char *what, struct sockaddr_storage *a, socklen_t len) {
    int port = a->ss_family == AF_INET ? ntohs(((struct sockaddr_in *)a)->sin_port)
                                       : ntohs(((struct sockaddr_in6 *)a)->sin6_port);
    printf("%-44s family %s, len %u, port %s\n", what, a->ss_family == AF_INET ? "AF_INET" : a->ss_family == AF_INET6 ? "AF_INET6" : "other",
           (unsigned)len, port ? "set" : "0");
    fflush(stdout);
}

static struct iovec *rio_none(void) { return NULL; }

/* The UDP socket the SIGALRM handler sends on (send is async-signal-safe). */
static int alarm_socket = -1;
static void on_alarm(int signal) {
    (void)signal;
    if (alarm_socket >= 0)
        send(alarm_socket, "wake", 4, 0);
}

/* SIGALRM in 100 ms, its handler with `flags`. */
static void alarm_soon(int flags) {
    struct sigaction sa = {.sa_handler = on_alarm, .sa_flags = flags};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGALRM, &sa, NULL);
    struct itimerval it = {.it_value = {0, 100000}};
    setitimer(ITIMER_REAL, &it, NULL);
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: calls PEER_IP ECHO_PORT UDP_ECHO_PORT LISTEN_PORT\n");
        return 2;
    }
    const char *peer = argv[1];
    int echo_port = atoi(argv[2]), udp_port = atoi(argv[3]), listen_port = atoi(argv[4]);
    signal(SIGPIPE, SIG_IGN);
    char buf[256];
    struct sockaddr_storage ss;
    socklen_t sl;

    puts("== socket");
    int t = show_fd("socket(AF_INET, SOCK_STREAM)", socket(AF_INET, SOCK_STREAM, 0));
    int nb = show_fd("socket(AF_INET, STREAM|NONBLOCK|CLOEXEC)", socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    show("fcntl(F_GETFL) & O_NONBLOCK", fcntl(nb, F_GETFL) & O_NONBLOCK ? 1 : 0);
    show("fcntl(F_GETFD)", fcntl(nb, F_GETFD));
    int u6 = show_fd("socket(AF_INET6, SOCK_DGRAM)", socket(AF_INET6, SOCK_DGRAM, 0));
    show("socket(AF_INET, SOCK_STREAM, IPPROTO_UDP)", socket(AF_INET, SOCK_STREAM, IPPROTO_UDP));

    puts("== bind");
    show("bind(NULL, 16)", bind(t, NULL, 16));
    struct sockaddr_in any = v4("0.0.0.0", listen_port);
    show("bind(len 3)", bind(t, (struct sockaddr *)&any, 3));
    struct sockaddr_in6 a6 = {.sin6_family = AF_INET6, .sin6_port = htons(listen_port)};
    show("bind(AF_INET socket, sockaddr_in6)", bind(t, (struct sockaddr *)&a6, sizeof a6));
    struct sockaddr_in far = v4("10.99.99.99", listen_port);
    show("bind(10.99.99.99, not ours)", bind(t, (struct sockaddr *)&far, sizeof far));
    struct sockaddr_in short6 = v4("0.0.0.0", 0);
    show("bind(AF_INET6 socket, sockaddr_in len 16)", bind(u6, (struct sockaddr *)&short6, sizeof short6));
    sl = sizeof ss;
    show("getsockname(unbound)", getsockname(t, (struct sockaddr *)&ss, &sl));
    show_addr("  unbound name", &ss, sl);

    puts("== options");
    int one = 1, zero = 0, size = 8192;
    show("setsockopt(SO_REUSEADDR, 1)", setsockopt(t, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one));
    show("getsockopt(SO_REUSEADDR)", int_opt(t, SOL_SOCKET, SO_REUSEADDR));
    show("bind(0.0.0.0:LISTEN_PORT)", bind(t, (struct sockaddr *)&any, sizeof any));
    show("bind again", bind(t, (struct sockaddr *)&any, sizeof any));
    sl = sizeof ss;
    show("getsockname(bound)", getsockname(t, (struct sockaddr *)&ss, &sl));
    show_addr("  bound name", &ss, sl);
    show("getsockopt(SO_KEEPALIVE) default", int_opt(t, SOL_SOCKET, SO_KEEPALIVE));
    show("setsockopt(SO_KEEPALIVE, 1)", setsockopt(t, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one));
    show("getsockopt(SO_KEEPALIVE)", int_opt(t, SOL_SOCKET, SO_KEEPALIVE));
    show("setsockopt(SO_RCVBUF, 8192)", setsockopt(t, SOL_SOCKET, SO_RCVBUF, &size, sizeof size));
    show("getsockopt(SO_RCVBUF)", int_opt(t, SOL_SOCKET, SO_RCVBUF));
    show("setsockopt(SO_SNDBUF, 8192)", setsockopt(t, SOL_SOCKET, SO_SNDBUF, &size, sizeof size));
    show("getsockopt(SO_SNDBUF)", int_opt(t, SOL_SOCKET, SO_SNDBUF));
    struct linger lg = {.l_onoff = 1, .l_linger = 5};
    show("setsockopt(SO_LINGER, {1, 5})", setsockopt(t, SOL_SOCKET, SO_LINGER, &lg, sizeof lg));
    struct linger lg2 = {0};
    sl = sizeof lg2;
    show("getsockopt(SO_LINGER)", getsockopt(t, SOL_SOCKET, SO_LINGER, &lg2, &sl));
    printf("  linger: onoff %d, linger %d, len %u\n", lg2.l_onoff, lg2.l_linger, (unsigned)sl);
    show("setsockopt(SO_LINGER, short)", setsockopt(t, SOL_SOCKET, SO_LINGER, &lg, 4));
    show("setsockopt(TCP_NODELAY, 1)", setsockopt(t, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one));
    show("getsockopt(TCP_NODELAY)", int_opt(t, IPPROTO_TCP, TCP_NODELAY));
    show("setsockopt(TCP_NODELAY, short)", setsockopt(t, IPPROTO_TCP, TCP_NODELAY, &one, 2));
    show("setsockopt(TCP_NODELAY, NULL)", setsockopt(t, IPPROTO_TCP, TCP_NODELAY, NULL, 4));
    show("getsockopt(SO_TYPE)", int_opt(t, SOL_SOCKET, SO_TYPE));
    show("getsockopt(SO_ERROR)", int_opt(t, SOL_SOCKET, SO_ERROR));
    show("getsockopt(SOL_SOCKET, 9999)", int_opt(t, SOL_SOCKET, 9999));
    show("setsockopt(SOL_SOCKET, 9999)", setsockopt(t, SOL_SOCKET, 9999, &one, sizeof one));
    show("setsockopt(IPV6_V6ONLY) on AF_INET", setsockopt(t, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one));
    show("getsockopt(IPV6_V6ONLY) on AF_INET6", int_opt(u6, IPPROTO_IPV6, IPV6_V6ONLY));
    show("setsockopt(IPV6_V6ONLY, 1) on AF_INET6", setsockopt(u6, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one));
    show("getsockopt(IPV6_V6ONLY) on AF_INET6", int_opt(u6, IPPROTO_IPV6, IPV6_V6ONLY));
    show("setsockopt(TCP_NODELAY) on UDP", setsockopt(u6, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one));
    show("getsockopt(SO_ACCEPTCONN) before listen", int_opt(t, SOL_SOCKET, SO_ACCEPTCONN));
    (void)zero;

    puts("== listen, accept, data");
    show("listen(UDP socket)", listen(u6, 4));
    show("accept(not listening)", accept(nb, NULL, NULL));
    show("listen(4)", listen(t, 4));
    show("getsockopt(SO_ACCEPTCONN)", int_opt(t, SOL_SOCKET, SO_ACCEPTCONN));
    int flags = fcntl(t, F_GETFL);
    show("fcntl(F_SETFL, O_NONBLOCK)", fcntl(t, F_SETFL, flags | O_NONBLOCK));
    show("accept (nobody yet, non-blocking)", accept(t, NULL, NULL));
    show("fcntl(F_SETFL, blocking)", fcntl(t, F_SETFL, flags));
    puts("listening");
    fflush(stdout);
    struct pollfd pfd = {.fd = t, .events = POLLIN};
    show("poll(listener, POLLIN)", poll(&pfd, 1, 10000));
    show("  revents", pfd.revents);
    sl = sizeof ss;
    int c = show_fd("accept4(SOCK_NONBLOCK)", accept4(t, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK));
    show_addr("  peer", &ss, sl);
    show("fcntl(F_GETFL) & O_NONBLOCK", fcntl(c, F_GETFL) & O_NONBLOCK ? 1 : 0);
    sl = sizeof ss;
    show("getpeername", getpeername(c, (struct sockaddr *)&ss, &sl));
    show_addr("  peer name", &ss, sl);
    pfd = (struct pollfd){.fd = c, .events = POLLIN};
    show("poll(conn, POLLIN)", poll(&pfd, 1, 10000));
    show("recv(MSG_PEEK, 2)", recv(c, buf, 2, MSG_PEEK));
    int avail = -1;
    show("ioctl(FIONREAD)", ioctl(c, FIONREAD, &avail));
    show("  bytes", avail);
    show("recv(2)", recv(c, buf, 2, 0));
    show("read(10)", read(c, buf + 2, 10));
    printf("  got \"%.5s\"\n", buf);
    struct iovec iov[2] = {{buf, 2}, {buf + 2, 3}};
    show("writev(2 + 3)", writev(c, iov, 2));
    show("recv (nothing, non-blocking)", recv(c, buf, sizeof buf, 0));
    show("ioctl(FIONBIO, 0)", ioctl(c, FIONBIO, &zero));
    show("fcntl(F_GETFL) & O_NONBLOCK", fcntl(c, F_GETFL) & O_NONBLOCK ? 1 : 0);
    show("recv(MSG_DONTWAIT)", recv(c, buf, sizeof buf, MSG_DONTWAIT));
    /* The client closes once it reads this line. */
    puts("close now");
    fflush(stdout);
    show("read (until the client's FIN)", read(c, buf, sizeof buf));
    show("shutdown(SHUT_WR)", shutdown(c, SHUT_WR));
    show("shutdown(99)", shutdown(c, 99));
    show("close(conn)", close(c));
    show("close(conn) again", close(c));
    show("recv(closed fd)", recv(c, buf, 1, 0));

    puts("== connect, data");
    struct sockaddr_in echo = v4(peer, echo_port);
    int s0 = show_fd("socket(AF_INET, STREAM)", socket(AF_INET, SOCK_STREAM, 0));
    sl = sizeof ss;
    show("getpeername(unconnected)", getpeername(s0, (struct sockaddr *)&ss, &sl));
    show("send(unconnected, MSG_NOSIGNAL)", send(s0, "x", 1, MSG_NOSIGNAL));
    show("recv(unconnected)", recv(s0, buf, 1, 0));
    show("shutdown(unconnected)", shutdown(s0, SHUT_RDWR));
    show("close(unconnected)", close(s0));
    int s = show_fd("socket(AF_INET, STREAM|NONBLOCK)", socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0));
    show("connect(len 8)", connect(s, (struct sockaddr *)&echo, 8));
    show("connect(echo, non-blocking)", connect(s, (struct sockaddr *)&echo, sizeof echo));
    pfd = (struct pollfd){.fd = s, .events = POLLOUT};
    show("poll(POLLOUT)", poll(&pfd, 1, 10000));
    show("  revents", pfd.revents);
    show("getsockopt(SO_ERROR)", int_opt(s, SOL_SOCKET, SO_ERROR));
    show("connect again", connect(s, (struct sockaddr *)&echo, sizeof echo));
    show("fcntl(F_SETFL, blocking)", fcntl(s, F_SETFL, fcntl(s, F_GETFL) & ~O_NONBLOCK));
    show("send(\"ping\")", send(s, "ping", 4, 0));
    show("recv(MSG_WAITALL, 4)", recv(s, buf, 4, MSG_WAITALL));
    struct msghdr msg = {0};
    struct iovec mio[2] = {{"se", 2}, {"ndmsg", 5}};
    msg.msg_iov = mio;
    msg.msg_iovlen = 2;
    show("sendmsg(2 iovecs)", sendmsg(s, &msg, 0));
    struct msghdr many = {.msg_iov = mio, .msg_iovlen = 2000};
    show("sendmsg(2000 iovecs)", sendmsg(s, &many, 0));
    show("recv(0 bytes)", recv(s, buf, 0, 0));
    show("readv(-1 iovecs)", readv(s, rio_none(), -1));
    char rb1[3], rb2[10];
    struct iovec rio[2] = {{rb1, 3}, {rb2, 4}};
    struct msghdr rmsg = {.msg_iov = rio, .msg_iovlen = 2};
    show("recvmsg(MSG_WAITALL, 3 + 4)", recvmsg(s, &rmsg, MSG_WAITALL) >= 0 ? 7 : -1);
    printf("  got \"%.3s%.4s\"\n", rb1, rb2);
    int d = show_fd("dup", dup(s));
    show("send on the dup", send(d, "dup", 3, 0));
    show("recv(MSG_WAITALL, 3)", recv(s, buf, 3, MSG_WAITALL));
    show("dup2(to 50)", dup2(s, 50));
    show("dup3(to 51, O_CLOEXEC)", dup3(s, 51, O_CLOEXEC));
    show("fcntl(51, F_GETFD)", fcntl(51, F_GETFD));
    show("dup3(same fd)", dup3(s, s, 0));
    int f = show_fd("fcntl(F_DUPFD_CLOEXEC, 60)", fcntl(s, F_DUPFD_CLOEXEC, 60));
    show("  at or above 60", f >= 60);
    show("close(s)", close(s));
    show("write on the dup2 (s closed)", write(50, "still", 5));
    show("read(MSG_WAITALL via recv)", recv(51, buf, 5, MSG_WAITALL));
    show("close(d)", close(d));
    show("close(50)", close(50));
    show("close(51)", close(51));
    show("close(f): the last", close(f));
    int r = show_fd("socket(AF_INET, STREAM)", socket(AF_INET, SOCK_STREAM, 0));
    struct sockaddr_in closed = v4(peer, 1);
    show("connect(closed port)", connect(r, (struct sockaddr *)&closed, sizeof closed));
    show("getsockopt(SO_ERROR) after", int_opt(r, SOL_SOCKET, SO_ERROR));
    close(r);

    puts("== UDP");
    int u = show_fd("socket(AF_INET, SOCK_DGRAM)", socket(AF_INET, SOCK_DGRAM, 0));
    struct sockaddr_in uecho = v4(peer, udp_port);
    show("sendto(echo)", sendto(u, "datagram", 8, 0, (struct sockaddr *)&uecho, sizeof uecho));
    sl = sizeof ss;
    show("recvfrom", recvfrom(u, buf, sizeof buf, 0, (struct sockaddr *)&ss, &sl));
    show_addr("  from", &ss, sl);
    show("sendto(NULL address, unconnected)", sendto(u, "x", 1, 0, NULL, 0));
    show("connect(echo)", connect(u, (struct sockaddr *)&uecho, sizeof uecho));
    sl = sizeof ss;
    show("getpeername", getpeername(u, (struct sockaddr *)&ss, &sl));
    show_addr("  peer", &ss, sl);
    show("send(\"one\")", send(u, "one", 3, 0));
    show("recv(2 of 3: cut)", recv(u, buf, 2, 0));
    alarm_soon(0);
    show("recv, a signal without SA_RESTART", recv(u, buf, sizeof buf, 0));
    alarm_socket = u;
    alarm_soon(SA_RESTART);
    show("recv, a signal with SA_RESTART (echo)", recv(u, buf, sizeof buf, 0));
    alarm_socket = -1;
    signal(SIGALRM, SIG_DFL);

    puts("== readiness: select, pselect, poll, ppoll, epoll");
    show("send(\"two\")", send(u, "two", 3, 0));
    fd_set rs;
    FD_ZERO(&rs);
    FD_SET(u, &rs);
    struct timeval tv = {10, 0};
    show("select(udp, read)", select(u + 1, &rs, NULL, NULL, &tv));
    show("  set", FD_ISSET(u, &rs));
    FD_ZERO(&rs);
    FD_SET(u, &rs);
    struct timespec ts = {10, 0};
    show("pselect(udp, read)", pselect(u + 1, &rs, NULL, NULL, &ts, NULL));
    pfd = (struct pollfd){.fd = u, .events = POLLIN | POLLOUT};
    show("ppoll(udp, IN|OUT)", ppoll(&pfd, 1, &ts, NULL));
    show("  revents", pfd.revents);
    show("recv", recv(u, buf, sizeof buf, 0));
    pfd = (struct pollfd){.fd = u, .events = POLLIN};
    show("poll(udp, IN) after reading", poll(&pfd, 1, 0));
    int ep = show_fd("epoll_create1(EPOLL_CLOEXEC)", epoll_create1(EPOLL_CLOEXEC));
    int ep0 = show_fd("epoll_create(1)", epoll_create(1));
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = u};
    show("epoll_ctl(ADD udp)", epoll_ctl(ep, EPOLL_CTL_ADD, u, &ev));
    struct epoll_event got[4];
    show("epoll_wait (nothing yet)", epoll_wait(ep, got, 4, 0));
    show("send(\"three\")", send(u, "three", 5, 0));
    show("epoll_wait", epoll_wait(ep, got, 4, 10000));
    show("  events", got[0].events);
    show("  is the udp socket", got[0].data.fd == u);
    show("epoll_pwait", epoll_pwait(ep, got, 4, 10000, NULL));
    show("recv", recv(u, buf, sizeof buf, 0));
    ev.events = EPOLLOUT;
    show("epoll_ctl(MOD udp, OUT)", epoll_ctl(ep, EPOLL_CTL_MOD, u, &ev));
    show("epoll_wait(OUT)", epoll_wait(ep, got, 4, 10000));
    show("  events", got[0].events);
    show("epoll_ctl(DEL udp)", epoll_ctl(ep, EPOLL_CTL_DEL, u, NULL));
    close(ep);
    close(ep0);
    close(u);
    close(u6);
    close(nb);
    show("close(listener)", close(t));
    puts("== end");
    return 0;
}
