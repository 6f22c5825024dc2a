/* netns.c - network namespaces made ahead of time.
 *
 * A new network namespace is the most expensive part of a sandbox: ~300 us
 * of CPU inside clone3 (registering lo, the per-namespace sysctls, proc and
 * netfilter state), against ~100 us for the five other namespaces together.
 * A background thread makes a few ahead, with lo already up, and
 * container_spawn takes one: the spawning thread setns()es into it just
 * around clone3 (the child inherits it; CLONE_NEWNET is left out) and goes
 * back to the daemon's namespace right after.
 *
 * Such a namespace is owned by the host's user namespace, not the
 * sandbox's: the sandbox's root can use it (sockets on lo) but not
 * reconfigure it - no addresses, routes, sysctls, raw sockets or netfilter,
 * which is stricter than a namespace of its own. Each is used by one sandbox
 * only and dies with it; none is ever reused.
 *
 * If the pool is empty (a burst) or unusable, spawn creates the namespace
 * inline as before; nothing depends on the pool but speed.
 */
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/log.h"
#include "sandbox/container/container_internal.h"

/* Bring up lo in the calling thread's network namespace. */
static int loopback_up(void)
{
    cleanup_close int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0)
        return -errno;
    struct ifreq ifr;
    memset(&ifr, 0, sizeof(ifr));
    memcpy(ifr.ifr_name, "lo", 3);
    if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0)
        return -errno;
    ifr.ifr_flags |= IFF_UP;
    if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0)
        return -errno;
    return 0;
}

/* A new namespace with lo up, as an fd. The thread stays in it (it does
 * nothing else, and the next unshare leaves it). */
static int make_netns(void)
{
    if (unshare(CLONE_NEWNET) < 0)
        return -errno;
    int ret = loopback_up();
    if (ret < 0)
        return ret;
    int fd = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    return fd < 0 ? -errno : fd;
}

static void *on_fill(void *arg)
{
    struct netns_pool *pool = arg;
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, NULL);

    pthread_mutex_lock(&pool->lock);
    while (!pool->stop) {
        if (pool->n == ARRAY_SIZE(pool->fd)) {
            pthread_cond_wait(&pool->cond, &pool->lock);
            continue;
        }
        pthread_mutex_unlock(&pool->lock);
        int fd = make_netns();
        pthread_mutex_lock(&pool->lock);
        if (fd < 0) {
            log_warn("container: network namespace pool stops: %s; sandboxes create "
                     "their own",
                     strerror(-fd));
            break;
        }
        if (pool->stop || pool->n == ARRAY_SIZE(pool->fd))
            close(fd);
        else
            pool->fd[pool->n++] = fd;
    }
    pthread_mutex_unlock(&pool->lock);
    return NULL;
}

int container__netns_pool_start(struct netns_pool *pool, struct ember_error *err)
{
    memset(pool, 0, sizeof(*pool));
    pool->host_fd = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
    if (pool->host_fd < 0)
        return ember_error_sys(err, -errno, "container: open /proc/self/ns/net");
    pthread_mutex_init(&pool->lock, NULL);
    pthread_cond_init(&pool->cond, NULL);
    int ret = pthread_create(&pool->thread, NULL, on_fill, pool);
    if (ret != 0) {
        ember_error_sys(err, -ret, "container: start the network namespace thread");
        goto err_sync;
    }
    pool->running = true;
    return 0;

err_sync:
    pthread_cond_destroy(&pool->cond);
    pthread_mutex_destroy(&pool->lock);
    close(pool->host_fd);
    pool->host_fd = -1;
    return -ret;
}

void container__netns_pool_stop(struct netns_pool *pool)
{
    if (!pool->running)
        return;
    pthread_mutex_lock(&pool->lock);
    pool->stop = true;
    pthread_cond_signal(&pool->cond);
    pthread_mutex_unlock(&pool->lock);
    pthread_join(pool->thread, NULL);
    while (pool->n > 0)
        close(pool->fd[--pool->n]);
    pthread_cond_destroy(&pool->cond);
    pthread_mutex_destroy(&pool->lock);
    close(pool->host_fd);
    pool->host_fd = -1;
    pool->running = false;
}

int container__netns_take(struct netns_pool *pool)
{
    if (!pool->running)
        return -1;
    pthread_mutex_lock(&pool->lock);
    int fd = pool->n > 0 ? pool->fd[--pool->n] : -1;
    pthread_cond_signal(&pool->cond);
    pthread_mutex_unlock(&pool->lock);
    return fd;
}
