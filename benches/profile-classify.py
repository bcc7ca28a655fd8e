import sys, re, collections
# perf script output: header line per sample "comm pid/tid ... :" then stack lines "\t addr sym (dso)"
groups = collections.Counter(); total = 0; comms = collections.Counter(); leafs = collections.Counter()
def classify(frames):
    leaf = frames[0] if frames else ''
    joined = ' '.join(frames[:12])
    if re.search(r'aes|gcm|ghash|chacha|poly1305|ChaCha|x25519|ring_core|gfmul|clmul', leaf, re.I): return 'crypto'
    if re.search(r'memcpy|memmove|copy_user|copy_to_user|copy_from_user|_copy_to_iter|_copy_from_iter|rep_movs|memset|csum_partial_copy', leaf): return 'copies'
    if re.search(r'offload::|segment_tcp|Coalescer|coalesc|finish_checksum|checksum', leaf): return 'segmentation (userspace split/coalesce, checksums)'
    if re.search(r'engine::|switch::|MacTable|keypair::|replay::|pool::|hashbrown|RwLock|rwlock|futex', leaf): return 'switching + engine (tables, replay, pools, locks)'
    if re.search(r'poll|schedule|__schedule|sched_yield|do_sched_yield|pick_next|finish_task_switch|switch_to|yield', joined[:300]): return 'scheduling / poll / yield'
    if re.search(r'\[kernel|kallsyms|vmlinux', ' '.join(frames[:1])) or re.search(r'entry_SYSCALL|do_syscall|__x64_sys|udp|tun_|ip_|__dev|netif|skb|tcp_|br_|veth|nf_', joined): return 'kernel (syscalls: UDP/IP/TAP/bridge path)'
    return 'other userspace'
cur=None; frames=[]
def flush():
    global total
    if cur is None: return
    comm = cur
    comms[comm]+=1
    if re.match(r'^mesh-dp\d+$', comm):
        leafs[(classify(frames), frames[0] if frames else '')]+=1
        g = classify(frames); groups[g]+=1; total_add()
def total_add():
    global total; total+=1
for line in sys.stdin:
    if not line.strip():
        flush(); cur=None; frames=[]; continue
    if not line.startswith('\t') and not line.startswith(' '):
        cur = line.split()[0]; frames=[]
    else:
        parts=line.strip().split(None,1)
        if len(parts)==2:
            sym=parts[1]
            frames.append(sym)
flush()
print("samples in mesh-dp* threads:", total)
for g,n in groups.most_common(): print(f"  {g:55s} {100*n/max(total,1):5.1f}%")
print("top comms machine-wide:")
for c,n in comms.most_common(12): print(f"  {c:20s} {n}")
print("top leaf symbols (mesh-dp<N>):")
for (g,s),n in leafs.most_common(25): print(f"  {100*n/max(total,1):5.1f}%  {g[:12]:12s} {s[:90]}")
