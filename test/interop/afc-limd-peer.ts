/**
 * A Python program that drives libimobiledevice's own AFC client (libimobiledevice-1.0.so.6, the
 * code behind afcclient and ifuse) through ctypes: no headers or compiler needed, only the Debian
 * library. It runs every afc_* call of the 1.3.0 API against a device found through
 * USBMUXD_SOCKET_ADDRESS and prints one JSON document of what each returned.
 *
 * LIMD error numbers used below: 0 success, 8 OBJECT_NOT_FOUND, 19 OP_WOULD_BLOCK, 33 DIR_NOT_EMPTY
 * (LIMD's own translation of the device's UNKNOWN_ERROR on REMOVE_PATH, lockdown-afc.md §9.5).
 */
export const LIMD_AFC_PEER = String.raw`
import ctypes, hashlib, json, sys

lib = ctypes.CDLL('libimobiledevice-1.0.so.6')
P = ctypes.c_void_p
S = ctypes.c_char_p
U64 = ctypes.c_uint64
U32 = ctypes.c_uint32
LIST = ctypes.POINTER(ctypes.c_char_p)

def sig(name, *args):
    f = getattr(lib, name)
    f.argtypes = list(args)
    f.restype = ctypes.c_int
    return f

idevice_new = sig('idevice_new', ctypes.POINTER(P), S)
idevice_free = sig('idevice_free', P)
start = sig('afc_client_start_service', P, ctypes.POINTER(P), S)
free_client = sig('afc_client_free', P)
devinfo = sig('afc_get_device_info', P, ctypes.POINTER(LIST))
read_dir = sig('afc_read_directory', P, S, ctypes.POINTER(LIST))
file_info = sig('afc_get_file_info', P, S, ctypes.POINTER(LIST))
dict_free = sig('afc_dictionary_free', LIST)
f_open = sig('afc_file_open', P, S, ctypes.c_int, ctypes.POINTER(U64))
f_close = sig('afc_file_close', P, U64)
f_lock = sig('afc_file_lock', P, U64, ctypes.c_int)
f_read = sig('afc_file_read', P, U64, ctypes.c_char_p, U32, ctypes.POINTER(U32))
f_write = sig('afc_file_write', P, U64, ctypes.c_char_p, U32, ctypes.POINTER(U32))
f_seek = sig('afc_file_seek', P, U64, ctypes.c_int64, ctypes.c_int)
f_tell = sig('afc_file_tell', P, U64, ctypes.POINTER(U64))
f_truncate = sig('afc_file_truncate', P, U64, U64)
remove = sig('afc_remove_path', P, S)
remove_all = sig('afc_remove_path_and_contents', P, S)
rename = sig('afc_rename_path', P, S, S)
mkdir = sig('afc_make_directory', P, S)
truncate = sig('afc_truncate', P, S, U64)
make_link = sig('afc_make_link', P, ctypes.c_int, S, S)
set_time = sig('afc_set_file_time', P, S, U64)

def strings(lst):
    out = []
    i = 0
    while lst and lst[i] is not None:
        out.append(lst[i].decode())
        i += 1
    return out

def as_dict(items):
    return dict(zip(items[0::2], items[1::2]))

out = {}
dev = P()
out['idevice_new'] = idevice_new(ctypes.byref(dev), sys.argv[1].encode())
afc = P()
out['start'] = start(dev, ctypes.byref(afc), b'muxwire-interop')
if out['start'] != 0:
    print(json.dumps(out)); sys.exit(0)

def listing(fn, path=None):
    lst = LIST()
    rc = fn(afc, ctypes.byref(lst)) if path is None else fn(afc, path.encode(), ctypes.byref(lst))
    items = strings(lst) if rc == 0 else []
    if rc == 0:
        dict_free(lst)
    return rc, items

def open_file(path, mode):
    h = U64()
    rc = f_open(afc, path.encode(), mode, ctypes.byref(h))
    return rc, h.value

def read(h, n):
    buf = ctypes.create_string_buffer(n)
    got = U32()
    rc = f_read(afc, h, buf, n, ctypes.byref(got))
    return rc, buf.raw[:got.value]

def write(h, data):
    done = U32()
    rc = f_write(afc, h, data, len(data), ctypes.byref(done))
    return rc, done.value

rc, items = listing(devinfo)
out['devinfo'] = [rc, as_dict(items)]
out['mkdir'] = mkdir(afc, b'/interop/sub')
rc, h = open_file('/interop/hello.txt', 3)
out['open_w'] = [rc, h]
out['write'] = write(h, b'hello from libimobiledevice')
out['close_w'] = f_close(afc, h)
rc, items = listing(file_info, '/interop/hello.txt')
out['stat'] = [rc, items[0::2], as_dict(items)]
out['list'] = listing(read_dir, '/interop')

rc, h = open_file('/interop/hello.txt', 1)
out['open_r'] = [rc, h]
rc, data = read(h, 5)
out['read5'] = [rc, data.decode()]
pos = U64()
out['tell'] = [f_tell(afc, h, ctypes.byref(pos)), pos.value]
out['seek_end'] = f_seek(afc, h, 0, 2)
rc, data = read(h, 100)
out['read_eof'] = [rc, len(data)]
out['seek_set'] = f_seek(afc, h, 6, 0)
rc, data = read(h, 100)
out['read_rest'] = [rc, data.decode()]

rc2, h2 = open_file('/interop/hello.txt', 1)
out['lock_ex'] = f_lock(afc, h, 2 | 4)
out['lock_sh_contended'] = f_lock(afc, h2, 1 | 4)
out['unlock'] = f_lock(afc, h, 8 | 4)
out['lock_sh'] = f_lock(afc, h2, 1 | 4)
out['close_r'] = [f_close(afc, h), f_close(afc, h2)]

big = bytes((i * 7 + (i >> 10)) & 0xff for i in range(3 * 1024 * 1024 + 11))
rc, h = open_file('/interop/big.bin', 3)
out['big_write'] = write(h, big)
f_close(afc, h)
rc, h = open_file('/interop/big.bin', 1)
chunks = []
while True:
    rc, data = read(h, 1024 * 1024)
    if rc != 0 or len(data) == 0:
        break
    chunks.append(data)
f_close(afc, h)
back = b''.join(chunks)
out['big_read'] = [rc, len(back), hashlib.sha256(back).hexdigest() == hashlib.sha256(big).hexdigest()]

out['rename'] = rename(afc, b'/interop/hello.txt', b'/interop/renamed.txt')
out['symlink'] = make_link(afc, 2, b'renamed.txt', b'/interop/link')
rc, items = listing(file_info, '/interop/link')
out['stat_link'] = [rc, as_dict(items)]
out['truncate'] = truncate(afc, b'/interop/renamed.txt', 5)
out['set_time'] = set_time(afc, b'/interop/renamed.txt', 1523978415000000000)
rc, items = listing(file_info, '/interop/renamed.txt')
out['stat_after'] = [rc, as_dict(items)]
rc, h = open_file('/interop/renamed.txt', 2)
out['file_truncate'] = f_truncate(afc, h, 2)
f_close(afc, h)

mkdir(afc, b'/trash/inner')
rc, h = open_file('/trash/inner/f', 3)
write(h, b'x')
f_close(afc, h)
out['remove_nonempty'] = remove(afc, b'/trash')
out['remove_missing'] = remove(afc, b'/interop/missing')
out['stat_missing'] = listing(file_info, '/interop/missing')[0]
out['stat_escape'] = listing(file_info, '../../etc/passwd')[0]
out['remove_all'] = remove_all(afc, b'/trash')
out['list_root'] = listing(read_dir, '/')

free_client(afc)
idevice_free(dev)
print(json.dumps(out))
`;
