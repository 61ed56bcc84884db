// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * decap.bpf.c: the DSR backend's half of sluice's direct server return.
 *
 * sluice (forwarding mode dsr-ipip / dsr-gue) sends a client's packet to a backend inside an
 * outer IP header: IPIP (outer IPv4 or IPv6, protocol 4 = IPv4 inside, 41 = IPv6 inside) or
 * GUE (outer UDP to port 6080, a 4-byte GUE version 0 header whose protocol field is 4 or
 * 41). The kernels sluice targets may lack the ipip/sit/fou modules, so this XDP program
 * removes the outer headers on the backend's interface and passes the inner packet, whose
 * destination is the VIP, to the stack; the backend holds the VIP on its loopback and
 * answers the client directly.
 *
 * XDP (not tc) because a decapsulation may change the address family (IPv4 outer, IPv6
 * inner): after XDP the stack re-reads the ethertype, after tc it would not. The Ethernet
 * header is moved forward over the outer headers and its ethertype set to the inner family;
 * VLAN-tagged frames, fragmented outer packets, IPv6 outer headers with extension headers
 * and GUE with options or control messages are passed on unchanged (the stack drops what
 * it cannot handle). Everything else passes untouched.
 *
 * Build: clang -O2 -g -target bpf -I/usr/include/<multiarch> -c decap.bpf.c
 * Attach: sluice-decap --iface eth0 --attach   (or: ip link set dev eth0 xdp obj decap.bpf.o sec xdp)
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#define GUE_PORT 6080
#define GUE_HDR_LEN 4

/* Outer header bytes between the Ethernet header and the inner IP packet, or 0 to pass. */
static __always_inline int outer_len(void *data, void *end, __u16 ethertype, __u16 *inner_type) {
    void *l3 = data + sizeof(struct ethhdr);
    __u8 proto;
    int len;
    if (ethertype == bpf_htons(ETH_P_IP)) {
        struct iphdr *ip = l3;
        if ((void *)(ip + 1) > end || ip->version != 4 || ip->ihl < 5) {
            return 0;
        }
        if (ip->frag_off & bpf_htons(0x3FFF)) { /* MF or an offset: not ours to reassemble */
            return 0;
        }
        len = ip->ihl * 4;
        proto = ip->protocol;
    } else if (ethertype == bpf_htons(ETH_P_IPV6)) {
        struct ipv6hdr *ip6 = l3;
        if ((void *)(ip6 + 1) > end || ip6->version != 6) {
            return 0;
        }
        len = sizeof(*ip6);
        proto = ip6->nexthdr;
    } else {
        return 0;
    }
    if (len > 60) {
        return 0;
    }
    if (proto == IPPROTO_UDP) {
        struct udphdr *udp = l3 + len;
        __u8 *gue = (__u8 *)(udp + 1);
        if ((void *)(gue + GUE_HDR_LEN) > end || udp->dest != bpf_htons(GUE_PORT)) {
            return 0;
        }
        /* Version 0 (top 2 bits), C = 0 (data), Hlen = 0 (no optional fields). */
        if (gue[0] != 0) {
            return 0;
        }
        proto = gue[1];
        len += sizeof(*udp) + GUE_HDR_LEN;
    }
    if (proto == IPPROTO_IPIP) {
        *inner_type = bpf_htons(ETH_P_IP);
    } else if (proto == IPPROTO_IPV6) {
        *inner_type = bpf_htons(ETH_P_IPV6);
    } else {
        return 0;
    }
    /* The inner header must be there and of the family it claims. */
    __u8 *inner = l3 + len;
    if ((void *)(inner + 1) > end) {
        return 0;
    }
    if ((inner[0] >> 4) != (*inner_type == bpf_htons(ETH_P_IP) ? 4 : 6)) {
        return 0;
    }
    return len;
}

SEC("xdp")
int sluice_decap(struct xdp_md *ctx) {
    void *data = (void *)(long)ctx->data;
    void *end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > end) {
        return XDP_PASS;
    }
    __u16 inner_type = 0;
    int len = outer_len(data, end, eth->h_proto, &inner_type);
    if (len <= 0) {
        return XDP_PASS;
    }
    struct ethhdr copy = *eth;
    copy.h_proto = inner_type;
    if (bpf_xdp_adjust_head(ctx, len) != 0) {
        return XDP_PASS;
    }
    data = (void *)(long)ctx->data;
    end = (void *)(long)ctx->data_end;
    eth = data;
    if ((void *)(eth + 1) > end) {
        return XDP_DROP; /* cannot happen: the inner header was checked above */
    }
    __builtin_memcpy(eth, &copy, sizeof(copy));
    return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
