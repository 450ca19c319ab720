// Many users, one root daemon: qzfs runs as root, mounted with allow_other, and every
// user acts as itself (DESIGN.md, invariant 8). Other users are child processes with their own
// uid, gid and groups (setpriv(1) for shell steps, a fork that drops its ids for exact system
// calls). Where a property is "as on the backing file system", the same steps run on a plain
// directory beside the mount (root_/ref, ext4 under /tmp) and the answers are compared, besides
// being checked against the value POSIX and Linux give.
#include <fcntl.h>
#include <grp.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "mount_fixture.h"
#include "qzfs/format/container.h"
#include "test_data.h"

namespace {

using namespace qzfs::mount_rig;
namespace fs = std::filesystem;
using namespace std::chrono_literals;

struct user {
  uid_t uid;
  gid_t gid;
  std::vector<gid_t> groups;  // supplementary
};
constexpr gid_t staff = 3000;  // a group no test user has as its primary one
const user root_user{0, 0, {}};
const user alice{1000, 1000, {}};
const user alice_staff{1000, 1000, {staff}};
const user bob{2000, 2000, {}};
const user bob_in_alices_group{2000, 2000, {1000}};
const user nobody{65534, 65534, {}};

// errno of a failed call, 0 when it succeeded.
int err(bool ok) { return ok ? 0 : errno; }

// "0644 1000:1000 reg" (lstat: a symlink's own owner), or the lstat error.
std::string describe(const fs::path& p) {
  struct stat st {};
  if (::lstat(p.c_str(), &st) != 0) return std::string("lstat: ") + std::strerror(errno);
  char mode[16];
  std::snprintf(mode, sizeof mode, "%04o", st.st_mode & 07777);
  const char* type = S_ISREG(st.st_mode)    ? "reg"
                     : S_ISDIR(st.st_mode)  ? "dir"
                     : S_ISFIFO(st.st_mode) ? "fifo"
                     : S_ISLNK(st.st_mode)  ? "link"
                     : S_ISCHR(st.st_mode)  ? "chr"
                                            : "other";
  std::string d = std::string(mode) + " " + std::to_string(st.st_uid) + ":" + std::to_string(st.st_gid) + " " + type;
  if (S_ISREG(st.st_mode) && st.st_nlink != 1) d += " nlink=" + std::to_string(st.st_nlink);
  return d;
}

// "name: description" lines for the names under dir.
std::string describe_all(const fs::path& dir, const std::vector<std::string>& names) {
  std::string s;
  for (const auto& n : names) s += n + ": " + describe(dir / n) + "\n";
  return s;
}

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

bool contains(const std::string& s, const std::string& what) { return s.find(what) != std::string::npos; }

// The mount options (per mount and per super block) of the qzfs mount on mp, from
// /proc/self/mountinfo: "ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [TAGS...] - TYPE SOURCE SUPER".
std::set<std::string> mount_flags(const fs::path& mp) {
  std::ifstream in("/proc/self/mountinfo");
  std::set<std::string> flags;
  std::string line;
  auto add = [&](const std::string& list) {
    std::stringstream ss(list);
    for (std::string f; std::getline(ss, f, ',');) flags.insert(f);
  };
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    std::vector<std::string> f;
    for (std::string w; ls >> w;) f.push_back(w);
    const auto dash = static_cast<std::size_t>(std::find(f.begin(), f.end(), "-") - f.begin());
    if (f.size() < 6 || f[4] != mp.string() || dash + 3 >= f.size() || f[dash + 1] != "fuse.qzfs") continue;
    add(f[5]);
    add(f[dash + 3]);
  }
  return flags;
}

std::string joined(const std::set<std::string>& s) {
  std::string j;
  for (const auto& x : s) j += x + ",";
  return j;
}

class multiuser : public mount_test {
 protected:
  void SetUp() override {
    mount_test::SetUp();
    ref_ = root_ / "ref";
    fs::create_directory(ref_);
    // mkdtemp made root_ 0700: other users must reach the mount, the backing directory (where a
    // test makes a file beside the mount) and the reference directory.
    for (const auto& p : {root_, backing_, mnt_, ref_}) ASSERT_EQ(::chmod(p.c_str(), 0755), 0) << p;
  }

  // `script` run by sh in `dir` as `u` (its uid, gid and groups alone; setpriv(1)); its output
  // (stdout and stderr) in *out; the exit status.
  int sh(const user& u, const fs::path& dir, const std::string& script, std::string* out = nullptr) {
    EXPECT_EQ(script.find('\''), std::string::npos) << "run() quotes with ': " << script;
    std::vector<std::string> a;
    if (u.uid != 0) {
      std::string groups;
      for (gid_t g : u.groups) groups += (groups.empty() ? "" : ",") + std::to_string(g);
      a = {"setpriv", "--reuid=" + std::to_string(u.uid), "--regid=" + std::to_string(u.gid),
           groups.empty() ? std::string("--clear-groups") : "--groups=" + groups};
    }
    for (const char* w : {"sh", "-c"}) a.emplace_back(w);
    a.push_back("cd \"$1\" && " + script);
    a.emplace_back("sh");
    a.push_back(dir.string());
    return run(a, out);
  }

  // fn() in a child process that is `u` (uid, gid, groups) with umask `mask`; fn's answer (an
  // errno value, 0 for success) is the child's exit status; -1 if it died (a stalled call is
  // ended by an alarm after 20 s).
  static int as(const user& u, mode_t mask, const std::function<int()>& fn) {
    const pid_t pid = spawn(u, mask, fn);
    int st = 0;
    if (::waitpid(pid, &st, 0) != pid) return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  }
  static pid_t spawn(const user& u, mode_t mask, const std::function<int()>& fn) {
    const pid_t pid = ::fork();
    if (pid == 0) {
      ::alarm(20);
      if (::setgroups(u.groups.size(), u.groups.data()) != 0 || ::setresgid(u.gid, u.gid, u.gid) != 0 ||
          ::setresuid(u.uid, u.uid, u.uid) != 0) {
        ::_exit(254);
      }
      ::umask(mask);
      ::_exit(std::min(fn(), 253));
    }
    return pid;
  }

  // A directory made by root at each of base/name, with this owner and mode (chmod, so no umask).
  void make_dir(const fs::path& p, uid_t uid, gid_t gid, mode_t mode) {
    ASSERT_EQ(::mkdir(p.c_str(), 0700), 0) << p;
    ASSERT_EQ(::chown(p.c_str(), uid, gid), 0) << p;
    ASSERT_EQ(::chmod(p.c_str(), mode), 0) << p;
  }

  fs::path ref_;
};

// Item 1: the caller's umask is applied exactly once. The daemon creates with the kernel's
// umask left to it (DONT_MASK, for default ACLs); forgetting it gives 0666/0777, applying the
// daemon's own (root's 022) on top gives 0644 where umask 002 asked for 0664, and an explicit
// open(O_CREAT, 0620) under umask 0 must stay 0620.
TEST_F(multiuser, umask_is_applied_exactly_once) {
  mount("commit=1,allow_other");
  auto steps = [&](const fs::path& base) {
    make_dir(base / "u", alice.uid, alice.gid, 0755);
    const fs::path u = base / "u";
    std::string out;
    EXPECT_EQ(sh(alice, u, "umask 002 && touch f002 && mkdir d002 && mkfifo p002 && "
                            "umask 022 && touch f022 && mkdir d022 && mkfifo p022", &out), 0) << out;
    EXPECT_EQ(as(alice, 0, [&] {
                const int fd = ::open((u / "g").c_str(), O_CREAT | O_WRONLY, 0620);
                return fd < 0 ? errno : err(::close(fd) == 0);
              }), 0);
    EXPECT_EQ(as(alice, 0, [&] { return err(::mkdir((u / "e").c_str(), 0751) == 0); }), 0);
    EXPECT_EQ(as(alice, 0, [&] { return err(::mkfifo((u / "q").c_str(), 0604) == 0); }), 0);
    EXPECT_EQ(as(alice, 027, [&] {
                const int fd = ::open((u / "h").c_str(), O_CREAT | O_WRONLY, 0666);
                return fd < 0 ? errno : err(::close(fd) == 0);
              }), 0);
    return describe_all(u, {"f002", "d002", "p002", "f022", "d022", "p022", "g", "e", "q", "h"});
  };
  const std::string want =
      "f002: 0664 1000:1000 reg\n"
      "d002: 0775 1000:1000 dir\n"
      "p002: 0664 1000:1000 fifo\n"
      "f022: 0644 1000:1000 reg\n"
      "d022: 0755 1000:1000 dir\n"
      "p022: 0644 1000:1000 fifo\n"
      "g: 0620 1000:1000 reg\n"
      "e: 0751 1000:1000 dir\n"
      "q: 0604 1000:1000 fifo\n"
      "h: 0640 1000:1000 reg\n";
  const std::string on_ref = steps(ref_);
  const std::string on_mount = steps(mnt_);
  EXPECT_EQ(on_ref, want) << "the reference directory";
  EXPECT_EQ(on_mount, on_ref);
}

// Item 2: what a user creates is the user's from the start (created with the caller's fsuid,
// fsgid and groups, not made by root and handed over with chown afterwards: the backing
// directory sees no attribute change after the creation), a hard link leaves its target's owner
// alone, and a set-group-ID directory gives its group (and, to new directories, its S_ISGID)
// exactly as the backing file system does, stripping S_ISGID from a file whose creator is not in
// that group. A user cannot make a device node.
TEST_F(multiuser, created_objects_belong_to_the_caller_from_the_start) {
  mount("commit=1,allow_other");
  auto mkfile = [](const fs::path& p, mode_t mode) {
    const int fd = ::open(p.c_str(), O_CREAT | O_EXCL | O_WRONLY, mode);
    return fd < 0 ? errno : err(::close(fd) == 0);
  };
  auto steps = [&](const fs::path& base, bool watch) {
    make_dir(base / "s", 0, 0, 01777);
    make_dir(base / "g", 0, staff, 02777);
    const fs::path s = base / "s", g = base / "g";
    EXPECT_EQ(as(bob, 0, [&] { return mkfile(s / "theirs", 0666); }), 0);
    // On the mount, the backing directories are watched for attribute changes while objects
    // are created in them.
    int in = -1;
    if (watch) {
      in = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
      EXPECT_GE(in, 0);
      EXPECT_GE(::inotify_add_watch(in, (backing_ / "s").c_str(), IN_ATTRIB), 0);
      EXPECT_GE(::inotify_add_watch(in, (backing_ / "g").c_str(), IN_ATTRIB), 0);
    }
    for (const auto& pair : {std::pair{alice, s}, std::pair{alice_staff, g}}) {
      const auto& who = pair.first;
      const fs::path dir = pair.second;  // (a copy: clang 14 cannot capture a structured binding)
      EXPECT_EQ(as(who, 022, [&] { return mkfile(dir / "f", 0666); }), 0) << dir;
      EXPECT_EQ(as(who, 022, [&] { return err(::mkdir((dir / "d").c_str(), 0777) == 0); }), 0) << dir;
      EXPECT_EQ(as(who, 022, [&] { return err(::mkfifo((dir / "p").c_str(), 0666) == 0); }), 0) << dir;
      EXPECT_EQ(as(who, 022, [&] { return err(::symlink("f", (dir / "l").c_str()) == 0); }), 0) << dir;
    }
    EXPECT_EQ(as(alice_staff, 0, [&] { return mkfile(g / "y", 02755); }), 0);  // a member keeps S_ISGID
    EXPECT_EQ(as(bob, 0, [&] { return mkfile(g / "x", 02755); }), 0);          // a non-member does not
    if (watch) {
      std::this_thread::sleep_for(1500ms);  // closes released and committed (commit=1)
      alignas(inotify_event) char buf[8192];
      std::string changed;
      for (ssize_t n; (n = ::read(in, buf, sizeof buf)) > 0;) {
        for (char* p = buf; p < buf + n;) {
          const auto* ev = reinterpret_cast<const inotify_event*>(p);
          changed += std::string(ev->len ? ev->name : "(directory)") + " ";
          p += sizeof(inotify_event) + ev->len;
        }
      }
      ::close(in);
      EXPECT_EQ(changed, "") << "attributes changed in the backing directory after creation";
    }
    EXPECT_EQ(as(alice, 022, [&] { return err(::link((s / "theirs").c_str(), (s / "hl").c_str()) == 0); }), 0);
    EXPECT_EQ(as(alice, 022, [&] { return err(::mknod((s / "null").c_str(), S_IFCHR | 0666, ::makedev(1, 3)) == 0); }), EPERM);
    return describe_all(s, {"f", "d", "p", "l", "theirs", "hl", "null"}) + describe_all(g, {"f", "d", "p", "l", "y", "x"});
  };
  const std::string want =
      "f: 0644 1000:1000 reg\n"
      "d: 0755 1000:1000 dir\n"
      "p: 0644 1000:1000 fifo\n"
      "l: 0777 1000:1000 link\n"
      "theirs: 0666 2000:2000 reg nlink=2\n"
      "hl: 0666 2000:2000 reg nlink=2\n"
      "null: lstat: No such file or directory\n"
      "f: 0644 1000:3000 reg\n"
      "d: 2755 1000:3000 dir\n"
      "p: 0644 1000:3000 fifo\n"
      "l: 0777 1000:3000 link\n"
      "y: 2755 1000:3000 reg\n"
      "x: 0755 2000:3000 reg\n";
  const std::string on_ref = steps(ref_, false);
  const std::string on_mount = steps(mnt_, true);
  EXPECT_EQ(on_ref, want) << "the reference directory";
  EXPECT_EQ(on_mount, on_ref);
}

// Item 3: O_CREAT on a name that is another user's file opens that file with the caller's own
// rights (EACCES on a 0600 file), never creates over it or hands it over. Once as the kernel
// sees it (it knows the file exists), and once where the file appeared beside the mount after
// the kernel cached the name as absent, so that the daemon's CREATE meets an existing file (its
// exclusive create fails and it must open with the caller's rights: a create as root followed
// by a chown would give the file, and with O_TRUNC its content, to the attacker).
TEST_F(multiuser, o_creat_does_not_take_over_another_users_file) {
  mount("commit=1,allow_other");
  auto steps = [&](const fs::path& base) {
    make_dir(base / "s", 0, 0, 01777);
    const fs::path s = base / "s";
    std::string out;
    EXPECT_EQ(sh(alice, s, "umask 077 && echo secret > victim", &out), 0) << out;
    EXPECT_NE(sh(bob, s, "echo x >> victim", &out), 0) << out;
    EXPECT_TRUE(contains(out, "Permission denied")) << out;
    EXPECT_EQ(as(bob, 022, [&] {
                const int fd = ::open((s / "victim").c_str(), O_CREAT | O_WRONLY, 0644);
                return fd < 0 ? errno : 0;
              }), EACCES);
    EXPECT_EQ(as(bob, 022, [&] {
                const int fd = ::open((s / "victim").c_str(), O_CREAT | O_WRONLY | O_TRUNC, 0644);
                return fd < 0 ? errno : 0;
              }), EACCES);
    EXPECT_EQ(slurp(s / "victim"), "secret\n") << s;
    return describe(s / "victim");
  };
  const std::string on_ref = steps(ref_);
  EXPECT_EQ(on_ref, "0600 1000:1000 reg");
  EXPECT_EQ(steps(mnt_), on_ref);

  // The race: bob's lookup leaves a negative entry (kept 1 s), alice's file appears in the
  // backing directory, bob's O_CREAT then reaches the daemon as a CREATE.
  for (const int extra : {0, O_TRUNC, O_APPEND}) {
    const std::string name = "late" + std::to_string(extra);
    const fs::path on_mount = mnt_ / "s" / name, beside = backing_ / "s" / name;
    struct stat st {};
    EXPECT_EQ(as(bob, 022, [&] { return err(::stat(on_mount.c_str(), &st) == 0); }), ENOENT) << name;
    EXPECT_EQ(as(alice, 077, [&] {
                const int fd = ::open(beside.c_str(), O_CREAT | O_EXCL | O_WRONLY, 0666);
                if (fd < 0) return errno;
                const bool ok = ::write(fd, "secret\n", 7) == 7;
                return err(::close(fd) == 0 && ok);
              }), 0) << name;
    EXPECT_EQ(as(bob, 022, [&] {
                const int fd = ::open(on_mount.c_str(), O_CREAT | O_WRONLY | extra, 0644);
                if (fd < 0) return errno;
                (void)!::write(fd, "x\n", 2);
                ::close(fd);
                return 0;
              }), EACCES) << name;
    EXPECT_EQ(describe(beside), "0600 1000:1000 reg") << name;
    EXPECT_EQ(slurp(beside), "secret\n") << name;
  }
  // Through the mount once the kernel's negative entries (1 s) have expired.
  std::this_thread::sleep_for(1200ms);
  for (const int extra : {0, O_TRUNC, O_APPEND}) {
    const fs::path on_mount = mnt_ / "s" / ("late" + std::to_string(extra));
    EXPECT_EQ(describe(on_mount), "0600 1000:1000 reg") << on_mount;
    EXPECT_EQ(slurp(on_mount), "secret\n") << on_mount;
  }
}

// Item 4: POSIX ACLs are enforced and inherited as on the backing file system. After
// `setfacl -m u:65534:r` on a 0600 file its group bits show the ACL mask (r), yet a member of the
// owning group may not read it (the group entry says ---): a check of the mode bits alone lets
// them. A default ACL is inherited by a new file and directory (and replaces the umask).
TEST_F(multiuser, posix_acls_are_enforced_and_inherited_as_on_the_backing_file_system) {
  if (run({"sh", "-c", "command -v setfacl && command -v getfacl"}) != 0) {
    GTEST_SKIP() << "setfacl/getfacl not installed (Debian package acl)";
  }
  mount("commit=1,allow_other");
  auto steps = [&](const fs::path& base) {
    make_dir(base / "a", alice.uid, alice.gid, 0755);
    const fs::path a = base / "a";
    std::string out, answers;
    EXPECT_EQ(sh(alice, a, "umask 077 && echo secret > f && setfacl -m u:65534:r f", &out), 0) << out;
    EXPECT_NE(sh(bob_in_alices_group, a, "cat f", &out), 0) << out;
    EXPECT_TRUE(contains(out, "Permission denied")) << out;
    EXPECT_EQ(sh(nobody, a, "cat f", &out), 0) << out;
    EXPECT_EQ(out, "secret\n");
    EXPECT_EQ(sh(alice, a, "getfacl -n --omit-header f", &out), 0) << out;
    EXPECT_TRUE(contains(out, "user:65534:r--")) << out;
    answers += "f:\n" + out;
    EXPECT_EQ(sh(alice, a, "mkdir dd && setfacl -d -m u:65534:rwx dd && umask 077 && echo hi > dd/new && mkdir dd/sub", &out), 0)
        << out;
    EXPECT_EQ(sh(alice, a, "getfacl -n --omit-header dd/new", &out), 0) << out;
    EXPECT_TRUE(contains(out, "user:65534:rwx")) << out;
    answers += "new:\n" + out;
    EXPECT_EQ(sh(alice, a, "getfacl -n --omit-header dd/sub", &out), 0) << out;
    EXPECT_TRUE(contains(out, "default:user:65534:rwx")) << out;
    answers += "sub:\n" + out;
    EXPECT_EQ(sh(nobody, a, "cat dd/new", &out), 0) << out;
    EXPECT_EQ(out, "hi\n");
    return answers + describe_all(a, {"f", "dd/new", "dd/sub"});
  };
  const std::string on_ref = steps(ref_);
  EXPECT_TRUE(contains(on_ref, "dd/new: 0664 1000:1000 reg")) << "the default ACL, not the umask 077\n" << on_ref;
  EXPECT_EQ(steps(mnt_), on_ref);
}

// Item 5: how each step's answers (mode, owner, size) compare with the reference directory's.
struct set_id_step {
  const char* name;
  uid_t owner;
  gid_t group;
  mode_t mode;
  user who;
  const char* script;  // F is the file
};

class multiuser_set_id : public multiuser {
 protected:
  std::string run_steps(const fs::path& base, const std::vector<set_id_step>& steps) {
    std::string answers;
    for (const auto& st : steps) {
      const fs::path f = base / st.name;
      std::ofstream(f) << "data\n";
      EXPECT_EQ(::chown(f.c_str(), st.owner, st.group), 0);
      EXPECT_EQ(::chmod(f.c_str(), st.mode), 0);
      std::string script = st.script, out;
      script.replace(script.find('F'), 1, st.name);
      EXPECT_EQ(sh(st.who, base, script, &out), 0) << st.name << ": " << out;
      struct stat s {};
      EXPECT_EQ(::stat(f.c_str(), &s), 0);
      answers += std::string(st.name) + ": " + describe(f) + " size=" + std::to_string(s.st_size) + "\n";
    }
    return answers;
  }
};

// Item 5: set-user-ID and set-group-ID (of a group-executable file) are cleared by a write or
// truncate by someone without CAP_FSETID, as on the backing file system: through the page cache
// (the kernel's file_remove_privs), with O_DIRECT (which bypasses it: the daemon must do it),
// by truncate(2) and by open(O_TRUNC) (with atomic O_TRUNC the kernel leaves that to the
// daemon too); kept when root writes; chown and chmod clear them as the kernel does.
// Failed on 6e5f69f: the direct write and open(O_TRUNC) cases kept 6777 (libfuse never sets
// fi->direct_io on a WRITE request; do_open truncated for O_TRUNC without clearing).
TEST_F(multiuser_set_id, bits_are_cleared_when_another_user_writes_or_truncates) {
  mount("commit=1,allow_other");
  const char* direct = "dd if=/dev/zero of=F bs=4096 count=1 oflag=direct conv=notrunc status=none";
  const std::vector<set_id_step> steps = {
      {"append", 0, 0, 06777, nobody, "echo x >> F"},
      {"direct", 0, 0, 06777, nobody, direct},
      {"truncate", 0, 0, 06777, nobody, "truncate -s 0 F"},
      {"open_trunc", 0, 0, 06777, nobody, ": > F"},
      {"by_owner", nobody.uid, nobody.gid, 06777, nobody, "echo x >> F"},
      {"by_owner_direct", nobody.uid, nobody.gid, 06777, nobody, direct},
      {"by_root", 0, 0, 06777, root_user, "echo x >> F"},
      {"by_root_direct", 0, 0, 06777, root_user, direct},
      {"by_root_open_trunc", 0, 0, 06777, root_user, ": > F"},
      {"chgrp", alice.uid, alice.gid, 06775, alice_staff, "chgrp 3000 F"},
      {"chmod_g_s_not_member", alice.uid, staff, 0755, alice, "chmod 2755 F"},
  };
  const std::string on_ref = run_steps(ref_, steps);
  for (const char* want : {"append: 0777 0:0 reg size=7", "direct: 0777 0:0 reg size=4096", "truncate: 0777 0:0 reg size=0",
                           "open_trunc: 0777 0:0 reg size=0", "by_root: 6777 0:0 reg size=7", "chgrp: 0775 1000:3000",
                           "chmod_g_s_not_member: 0755 1000:3000"}) {
    EXPECT_TRUE(contains(on_ref, want)) << want << " on the reference directory:\n" << on_ref;
  }
  EXPECT_EQ(run_steps(mnt_, steps), on_ref);
}

// Item 5: S_ISGID without group execute (once the mandatory-locking mark) is cleared when a
// user outside the file's group writes or truncates it, since Linux 6.2 on a local file system
// (setattr_should_drop_sgid); kept when a member of the group writes. The kernel's FUSE code
// clears S_ISGID only with S_IXGRP, so the daemon does it for what reaches it with its caller:
// writes without the writeback cache (this mount), direct writes, truncates. Writes the kernel's
// writeback cache sends later carry no caller (docs/FS.md).
TEST_F(multiuser_set_id, group_id_without_group_execute_as_on_the_backing_file_system) {
  mount("commit=1,allow_other,nowriteback");
  const std::vector<set_id_step> steps = {
      {"append", 0, 0, 02766, nobody, "echo x >> F"},
      {"direct", 0, 0, 02766, nobody, "dd if=/dev/zero of=F bs=4096 count=1 oflag=direct conv=notrunc status=none"},
      {"truncate", 0, 0, 02766, nobody, "truncate -s 0 F"},
      {"member_append", 0, staff, 02766, alice_staff, "echo x >> F"},
  };
  const std::string on_ref = run_steps(ref_, steps);
  EXPECT_EQ(run_steps(mnt_, steps), on_ref);
}

// Item 6: mount(8)'s nosuid, nodev and noexec reach the kernel: listed in mountinfo, a program
// on the mount does not run (126, Permission denied) and a device node does not open.
TEST_F(multiuser, nosuid_nodev_noexec_reach_the_kernel) {
  mount("commit=1,allow_other,nosuid,nodev,noexec");
  const auto flags = mount_flags(mnt_);
  for (const char* f : {"nosuid", "nodev", "noexec"}) EXPECT_TRUE(flags.contains(f)) << f << " not in " << joined(flags);
  std::string out;
  for (const auto& base : {ref_, mnt_}) {
    fs::copy_file("/bin/true", base / "true");
    ASSERT_EQ(::chmod((base / "true").c_str(), 0755), 0);
    ASSERT_EQ(::mknod((base / "null").c_str(), S_IFCHR | 0666, ::makedev(1, 3)), 0) << base;
  }
  EXPECT_EQ(run({(ref_ / "true").string()}, &out), 0) << "the reference directory: " << out;
  EXPECT_EQ(run({(mnt_ / "true").string()}, &out), 126) << out;
  EXPECT_TRUE(contains(out, "Permission denied")) << out;
  EXPECT_EQ(sh(root_user, ref_, "head -c 1 null", &out), 0) << "the reference directory: " << out;
  EXPECT_NE(sh(root_user, mnt_, "head -c 1 null", &out), 0) << out;
  EXPECT_TRUE(contains(out, "Permission denied")) << out;
}

// Item 6: the other way round (libfuse mounts nosuid,nodev by default, so the test above alone
// would pass if the options were ignored): asked for suid, dev and exec, the mount runs a
// program, honours a set-user-ID root program and opens a device node.
TEST_F(multiuser, suid_dev_exec_reach_the_kernel_when_asked_for) {
  mount("commit=1,allow_other,suid,dev,exec");
  const auto flags = mount_flags(mnt_);
  for (const char* f : {"nosuid", "nodev", "noexec"}) EXPECT_FALSE(flags.contains(f)) << f << " in " << joined(flags);
  fs::copy_file("/usr/bin/id", mnt_ / "id");
  ASSERT_EQ(::chmod((mnt_ / "id").c_str(), 04755), 0);
  ASSERT_EQ(::mknod((mnt_ / "null").c_str(), S_IFCHR | 0666, ::makedev(1, 3)), 0);
  std::string out;
  EXPECT_EQ(sh(nobody, mnt_, "./id -u", &out), 0) << out;
  EXPECT_EQ(out, "0\n");
  EXPECT_EQ(sh(nobody, mnt_, "head -c 1 null", &out), 0) << out;
}

// Item 6: sync, dirsync and noatime reach the kernel (mountinfo), and nosuid works: a
// set-user-ID root copy of id(1) on the mount runs as its caller (the same program runs as root
// where suid was asked for, in the test above).
TEST_F(multiuser, sync_dirsync_noatime_reach_the_kernel_and_nosuid_works) {
  mount("commit=1,allow_other,sync,dirsync,noatime,nosuid");
  const auto flags = mount_flags(mnt_);
  for (const char* f : {"sync", "dirsync", "noatime", "nosuid"}) EXPECT_TRUE(flags.contains(f)) << f << " not in " << joined(flags);
  fs::copy_file("/usr/bin/id", mnt_ / "id");
  ASSERT_EQ(::chmod((mnt_ / "id").c_str(), 04755), 0);
  std::string out;
  EXPECT_EQ(sh(nobody, mnt_, "./id -u", &out), 0) << out;
  EXPECT_EQ(out, "65534\n");
  // Writes still work and are durable.
  std::ofstream(mnt_ / "f") << "hello\n";
  EXPECT_EQ(slurp(mnt_ / "f"), "hello\n");
}

// Item 6: a read-only mount refuses every write with EROFS (root's too, which no permission
// check stops) and writes nothing to the backing directory: after unmounting, every entry has
// the size, mtime, ctime, mode, owner and content it had before the mount.
TEST_F(multiuser, read_only_mount_refuses_writes_and_leaves_the_backing_directory_untouched) {
  put(backing_ / "plain", pattern(3, 5000));
  mount("commit=1,allow_other");
  const auto text = pattern(1, 300000);
  put(mnt_ / "a", text);
  fs::create_directory(mnt_ / "d");
  put(mnt_ / "d" / "b", pattern(2, 70000));
  std::ofstream(mnt_ / "e").flush();
  fs::create_symlink("a", mnt_ / "l");
  unmount();
  auto snapshot = [&] {
    std::string out;
    EXPECT_EQ(run({"sh", "-c",
                   "cd \"$1\" && find . -printf \"%p %y %s %T@ %C@ %m %U %G %n %l\\n\" | sort && "
                   "find . -type f -exec sha256sum {} + | sort",
                   "sh", backing_.string()},
                  &out),
              0)
        << out;
    return out;
  };
  const std::string before = snapshot();
  mount("commit=1,allow_other,ro");
  EXPECT_TRUE(mount_flags(mnt_).contains("ro")) << joined(mount_flags(mnt_));
  EXPECT_EQ(qzfs::test::read_file((mnt_ / "a").string()), text);
  EXPECT_EQ(qzfs::test::read_file((mnt_ / "plain").string()), pattern(3, 5000));
  std::string out;
  EXPECT_EQ(run({QZFS_BINARY, "stats", mnt_.string()}, &out), 0) << out;
  for (const char* w : {"touch new", "touch a", "touch -d 2001-01-01 a", "echo x >> a", "echo x > a", "echo x >> plain",
                        "exec 3<> a", "truncate -s 0 a", "mkdir nd", "rm e", "rmdir d", "rm d/b", "chmod 600 a",
                        "chown 1000 a", "mv a a2", "ln -s a l2", "ln a hl", "mkfifo p",
                        "dd if=/dev/zero of=a bs=4096 count=1 oflag=direct conv=notrunc status=none"}) {
    EXPECT_NE(sh(root_user, mnt_, w, &out), 0) << w << ": " << out;
    EXPECT_TRUE(contains(out, "Read-only file system")) << w << ": " << out;
  }
  EXPECT_NE(sh(alice, mnt_, "echo x >> a", &out), 0) << out;
  EXPECT_EQ(qzfs::test::read_file((mnt_ / "a").string()), text);
  unmount();
  EXPECT_EQ(snapshot(), before);
}

// Item 7: the statistics name the backing directory and count everything under it: root and the
// mount's owner (root here) read them, another user gets EACCES (exit 1, Permission denied) and
// not a word of them.
TEST_F(multiuser, statistics_only_for_root_and_the_mount_owner) {
  mount("commit=1,allow_other");
  put(mnt_ / "f", pattern(1, 100000));
  std::string out;
  EXPECT_EQ(run({QZFS_BINARY, "stats", mnt_.string()}, &out), 0) << out;
  EXPECT_TRUE(contains(out, backing_.string())) << out;
  EXPECT_EQ(run({QZFS_BINARY, "stats", "--json", mnt_.string()}, &out), 0) << out;
  EXPECT_TRUE(contains(out, "\"containers\": 1")) << out;
  for (const auto* u : {&nobody, &alice}) {
    for (const char* json : {"", "--json "}) {
      EXPECT_EQ(sh(*u, root_, std::string(QZFS_BINARY) + " stats " + json + "mnt", &out), 1) << u->uid << ": " << out;
      EXPECT_TRUE(contains(out, "Permission denied")) << u->uid << ": " << out;
      EXPECT_FALSE(contains(out, backing_.string())) << u->uid << ": " << out;
      EXPECT_FALSE(contains(out, "containers")) << u->uid << ": " << out;
    }
  }
}

// `qzfs du` through the mount, like compsize but for any user: root sees every file; another
// user sees what they may read (the kernel checks read permission for the "user.qzfs.du"
// attribute, as for any user.* attribute), and is told how many files were left out. A file with
// two links counts once; holes, raw (incompressible) and gzip records are counted; the logical
// size is exact and the disk usage is the backing files' allocation.
TEST_F(multiuser, du_shows_what_files_hold_to_whoever_may_read_them) {
  mount("commit=1,allow_other");
  make_dir(mnt_ / "d", 0, 0, 0755);
  const auto text = pattern(1, 1 << 20), secret = pattern(2, 2 << 20);
  const auto noise = qzfs::test::make_data(qzfs::test::data_class::random, 512 << 10, 3);
  put(mnt_ / "d" / "text", text);
  put(mnt_ / "d" / "noise", noise);
  { std::ofstream((mnt_ / "d" / "sparse").string()); }
  ASSERT_EQ(::truncate((mnt_ / "d" / "sparse").c_str(), 4 << 20), 0);
  ASSERT_EQ(::link((mnt_ / "d" / "text").c_str(), (mnt_ / "d" / "text2").c_str()), 0);
  put(mnt_ / "secret", secret);
  ASSERT_EQ(::chmod((mnt_ / "secret").c_str(), 0600), 0);
  make_dir(mnt_ / "closed", 0, 0, 0700);
  put(mnt_ / "closed" / "hidden", pattern(4, 100000));
  const std::uint64_t visible = text.size() + noise.size() + (4u << 20);

  std::string out;
  ASSERT_EQ(run({QZFS_BINARY, "du", "--json", mnt_.string()}, &out), 0) << out;
  EXPECT_EQ(json_number(out, "files"), 5u) << "text (two links, once), noise, sparse, secret, hidden: " << out;
  EXPECT_EQ(json_number(out, "logical_bytes"), visible + secret.size() + 100000) << out;
  EXPECT_GE(json_number(out, "holes"), 32u) << "4 MiB never written, in 128 KiB records: " << out;
  EXPECT_GE(json_number(out, "raw"), 4u) << "512 KiB of random bytes: " << out;
  EXPECT_GE(json_number(out, "gzip", "per_format"), 24u) << "3 MiB of text: " << out;
  EXPECT_LT(json_number(out, "allocated_bytes"), json_number(out, "logical_bytes") / 2) << out;
  EXPECT_EQ(json_number(out, "unreadable_files"), 0u) << out;

  for (const auto* u : {&nobody, &alice}) {
    EXPECT_EQ(sh(*u, root_, std::string(QZFS_BINARY) + " du --json mnt", &out), 0) << u->uid << ": " << out;
    EXPECT_EQ(json_number(out, "files"), 3u) << u->uid << ": " << out;
    EXPECT_EQ(json_number(out, "logical_bytes"), visible) << u->uid << ": " << out;
    EXPECT_EQ(json_number(out, "unreadable_files"), 1u) << "the 0600 file, left out and counted: " << out;
    EXPECT_EQ(sh(*u, root_, std::string(QZFS_BINARY) + " du mnt/secret", &out), 0) << out;
    EXPECT_TRUE(contains(out, "1 file(s) left out: not readable by you")) << out;
    EXPECT_TRUE(contains(out, "Processed 0 files")) << out;
  }
  // The attribute is the daemon's: nobody sets it, a listing does not show it.
  EXPECT_EQ(::setxattr((mnt_ / "d" / "text").c_str(), "user.qzfs.du", "{}", 2, 0), -1);
  EXPECT_EQ(errno, EPERM);
  char names[4096];
  const ssize_t n = ::listxattr((mnt_ / "d" / "text").c_str(), names, sizeof names);
  ASSERT_GE(n, 0);
  EXPECT_FALSE(contains(std::string(names, static_cast<std::size_t>(n)), "qzfs")) << "listed";
  // Outside a qzfs mount: said, and exit 1.
  EXPECT_EQ(run({QZFS_BINARY, "du", ref_.string()}, &out), 0) << "an empty directory has nothing to sum: " << out;
  put(ref_ / "plain", pattern(5, 1000));
  EXPECT_EQ(run({QZFS_BINARY, "du", ref_.string()}, &out), 1) << out;
  EXPECT_TRUE(contains(out, "not on a qzfs mount")) << out;
  unmount();
}

// qzfs recompress through the mount: a file's records are compressed again at the request of its
// owner (or root, or the mount's owner), not of any user who may write it (spending the shared
// workers on them is the owner's choice); a new policy (--policy) stays root's and the mount
// owner's, as for qzfs set.
TEST_F(multiuser, recompress_is_the_file_owners_and_a_new_policy_roots) {
  mount("commit=1,allow_other");
  make_dir(mnt_ / "d", 0, 0, 0777);
  put(mnt_ / "d" / "roots", pattern(1, 1 << 20));
  ASSERT_EQ(::chmod((mnt_ / "d" / "roots").c_str(), 0666), 0);
  put(mnt_ / "d" / "hers", pattern(2, 1 << 20));
  ASSERT_EQ(::chown((mnt_ / "d" / "hers").c_str(), alice.uid, alice.gid), 0);
  std::string out;
  const std::string q = QZFS_BINARY;
  EXPECT_EQ(sh(alice, mnt_ / "d", q + " recompress roots", &out), 1) << out;
  EXPECT_TRUE(contains(out, "Permission denied")) << "a writer who does not own it: " << out;
  EXPECT_EQ(sh(alice, mnt_ / "d", q + " recompress --force hers", &out), 0) << out;
  EXPECT_TRUE(contains(out, "recompressed 1 files")) << out;
  EXPECT_EQ(sh(alice, mnt_ / "d", q + " recompress --policy zstd-3 hers", &out), 1) << out;
  EXPECT_TRUE(contains(out, "setting its policy: Operation not permitted")) << out;
  EXPECT_EQ(run({QZFS_BINARY, "recompress", "--policy", "zstd-3", (mnt_ / "d").string()}, &out), 0) << out;
  EXPECT_TRUE(contains(out, "recompressed 2 files")) << out;
  EXPECT_EQ(qzfs::test::read_file((mnt_ / "d" / "hers").string()), pattern(2, 1 << 20));
  unmount();
}

// Item 8: one user's expensive calls on one file do not hold up another user's calls on other
// files: while alice seeks for data and holes over a 1 TiB sparse file in a loop, bob's stat,
// lookup of a missing name, open and read each finish within a second.
TEST_F(multiuser, one_user_cannot_stall_another) {
  // nowriteback: the store answers SEEK_DATA/SEEK_HOLE itself (with the writeback cache the
  // kernel does, without holes), so the answers can be compared with ext4's.
  mount("commit=1,allow_other,nowriteback");
  constexpr off_t far = off_t{1} << 40;
  std::vector<off_t> answers_ref, answers_mnt;
  for (const auto& base : {ref_, mnt_}) {
    make_dir(base / "u", alice.uid, alice.gid, 0755);
    make_dir(base / "v", bob.uid, bob.gid, 0755);
    EXPECT_EQ(as(alice, 022, [&] {
                const int fd = ::open((base / "u" / "big").c_str(), O_CREAT | O_WRONLY, 0644);
                if (fd < 0) return errno;
                const bool ok = ::pwrite(fd, "x", 1, far) == 1;
                return err(::close(fd) == 0 && ok);
              }), 0);
    EXPECT_EQ(as(bob, 022, [&] {
                const int fd = ::open((base / "v" / "other").c_str(), O_CREAT | O_WRONLY, 0644);
                if (fd < 0) return errno;
                const bool ok = ::write(fd, "hello\n", 6) == 6;
                return err(::close(fd) == 0 && ok);
              }), 0);
    auto& answers = base == ref_ ? answers_ref : answers_mnt;
    const int fd = ::open((base / "u" / "big").c_str(), O_RDONLY);
    EXPECT_GE(fd, 0);
    for (off_t from : {off_t{0}, far / 2, far}) {
      answers.push_back(::lseek(fd, from, SEEK_DATA));
      answers.push_back(::lseek(fd, from, SEEK_HOLE));
    }
    ::close(fd);
  }
  EXPECT_EQ(answers_mnt, answers_ref);

  const fs::path big = mnt_ / "u" / "big";
  const pid_t seeker = spawn(alice, 022, [&] {
    const int fd = ::open(big.c_str(), O_RDONLY);
    if (fd < 0) return errno;
    const auto until = std::chrono::steady_clock::now() + 3s;
    while (std::chrono::steady_clock::now() < until) {
      for (off_t from : {off_t{0}, far / 2, far / 3}) {
        if (::lseek(fd, from, SEEK_DATA) != far || ::lseek(fd, from, SEEK_HOLE) < from) return EIO;
      }
    }
    return err(::close(fd) == 0);
  });
  std::this_thread::sleep_for(200ms);  // the seeks under way
  int rounds = 0;
  auto slowest = std::chrono::steady_clock::duration::zero();
  int status = 0;
  while (::waitpid(seeker, &status, WNOHANG) == 0) {
    const fs::path other = mnt_ / "v" / "other", missing = mnt_ / "v" / ("missing" + std::to_string(rounds));
    const auto t0 = std::chrono::steady_clock::now();
    EXPECT_EQ(as(bob, 022, [&] {
                struct stat st {};
                if (::stat(other.c_str(), &st) != 0) return errno;
                if (::stat(missing.c_str(), &st) == 0 || errno != ENOENT) return EEXIST;
                const int fd = ::open(other.c_str(), O_RDONLY);
                if (fd < 0) return errno;
                char buf[16];
                const bool ok = ::read(fd, buf, sizeof buf) == 6;
                return err(::close(fd) == 0 && ok);
              }), 0);
    slowest = std::max(slowest, std::chrono::steady_clock::now() - t0);
    ++rounds;
    std::this_thread::sleep_for(50ms);
  }
  ASSERT_TRUE(WIFEXITED(status)) << "the seeker died (stalled?)";
  EXPECT_EQ(WEXITSTATUS(status), 0) << "the seeker's lseek answers";
  EXPECT_GE(rounds, 10);
  EXPECT_LT(slowest, 1s) << "the slowest of " << rounds << " rounds took "
                         << std::chrono::duration_cast<std::chrono::milliseconds>(slowest).count() << " ms";
}

// The newest slot's record size of a container in the backing directory (0: not a container).
std::uint32_t record_size_of(const fs::path& backing_file) {
  const auto disk = qzfs::test::read_file(backing_file.string());
  qzfs::format::container_slot best;
  for (int i = 0; i < 2 && disk.size() >= 128; ++i) {
    qzfs::format::container_slot s;
    if (qzfs::format::parse_slot(std::span(disk).subspan(i * 64, 64), s) == qzfs::format::container_error::ok &&
        s.generation > best.generation) {
      best = s;
    }
  }
  return best.generation == 0 ? 0 : 1u << best.record_shift;
}

// qzfs set / get (issue 16): a directory's policy, level and record size included, is taken by
// what is made in it through the mount (directories pass it on), used by the files' records,
// kept in the backing directory and used by qzfs pack there; bad values are refused with a
// reason; a user who may not write the directory cannot set it; PROPERTY=inherit takes it away.
TEST_F(multiuser, a_directory_policy_is_inherited_and_its_levels_and_record_size_are_honoured) {
  mount("commit=1,allow_other");
  for (const char* d : {"fast", "small", "plain"}) make_dir(mnt_ / d, 0, 0, 0755);
  std::string out;
  ASSERT_EQ(run({QZFS_BINARY, "set", "compression=zstd-1", (mnt_ / "fast").string()}, &out), 0) << out;
  ASSERT_EQ(run({QZFS_BINARY, "set", "compression=zstd-19", "recordsize=1M", (mnt_ / "small").string()}, &out), 0) << out;
  ASSERT_EQ(run({QZFS_BINARY, "get", "--json", (mnt_ / "small").string(), (mnt_ / "plain").string()}, &out), 0) << out;
  EXPECT_TRUE(contains(out, "\"compression\": \"zstd-19\"")) << out;
  EXPECT_EQ(json_number(out, "recordsize"), 1u << 20) << out;
  EXPECT_TRUE(contains(out, "\"compression\": null")) << "plain has none: " << out;
  // Refused, with the reason; nothing changed.
  EXPECT_EQ(run({QZFS_BINARY, "set", "compression=bogus", (mnt_ / "fast").string()}, &out), 2);
  EXPECT_TRUE(contains(out, "unknown")) << out;
  EXPECT_EQ(run({QZFS_BINARY, "set", "recordsize=3K", (mnt_ / "fast").string()}, &out), 2);
  EXPECT_TRUE(contains(out, "power of two")) << out;
  EXPECT_EQ(::setxattr((mnt_ / "fast").c_str(), "user.qzfs.policy", "compression=gzip-99", 19, 0), -1);
  EXPECT_EQ(errno, EINVAL);
  EXPECT_NE(sh(alice, root_, std::string(QZFS_BINARY) + " set compression=lz4 mnt/fast", &out), 0) << out;
  // Not even on her own directory: a policy spends the mount's shared workers (root's and the
  // mount owner's to set); she may read it.
  make_dir(mnt_ / "alices", alice.uid, alice.gid, 0755);
  EXPECT_EQ(sh(alice, root_, std::string(QZFS_BINARY) + " set compression=zstd-19 mnt/alices", &out), 1) << out;
  EXPECT_TRUE(contains(out, "only root and the mount's owner")) << out;
  EXPECT_EQ(sh(alice, root_, std::string(QZFS_BINARY) + " get mnt/small", &out), 0) << out;
  EXPECT_TRUE(contains(out, "compression=zstd-19")) << out;
  ASSERT_EQ(run({QZFS_BINARY, "get", (mnt_ / "fast").string()}, &out), 0);
  EXPECT_TRUE(contains(out, "compression=zstd-1 ")) << out;
  // In a shared directory with a policy: alice's new file takes it; she may set the value it
  // holds already (a copy with attributes) and take it away (the mount's options apply), not
  // choose another.
  make_dir(mnt_ / "shared", 0, 0, 01777);
  ASSERT_EQ(run({QZFS_BINARY, "set", "compression=zstd-1", (mnt_ / "shared").string()}, &out), 0) << out;
  const std::string q = QZFS_BINARY;
  EXPECT_EQ(sh(alice, root_, "touch mnt/shared/a && " + q + " get mnt/shared/a", &out), 0) << out;
  EXPECT_TRUE(contains(out, "compression=zstd-1 ")) << out;
  EXPECT_EQ(sh(alice, root_, q + " set compression=zstd-1 mnt/shared/a", &out), 0) << "the same value: " << out;
  EXPECT_EQ(sh(alice, root_, q + " set compression=lz4 mnt/shared/a", &out), 1) << out;
  EXPECT_EQ(sh(alice, root_, q + " set compression=inherit mnt/shared/a && " + q + " get mnt/shared/a", &out), 0) << out;
  EXPECT_TRUE(contains(out, "compression=(mount's)")) << out;
  // Made in them: a subdirectory passes the policy on to its files.
  ASSERT_EQ(::mkdir((mnt_ / "small" / "sub").c_str(), 0755), 0);
  ASSERT_EQ(run({QZFS_BINARY, "get", (mnt_ / "small" / "sub").string()}, &out), 0);
  EXPECT_TRUE(contains(out, "compression=zstd-19 recordsize=1M")) << out;
  const auto text = pattern(7, 3 << 20);
  put(mnt_ / "fast" / "f", text);
  put(mnt_ / "small" / "sub" / "f", text);
  put(mnt_ / "plain" / "f", text);
  ASSERT_EQ(run({QZFS_BINARY, "du", "--json", (mnt_ / "fast").string(), (mnt_ / "small").string()}, &out), 0) << out;
  EXPECT_GE(json_number(out, "zstd", "per_format"), 24u) << out;
  ASSERT_EQ(run({QZFS_BINARY, "du", "--json", (mnt_ / "plain").string()}, &out), 0) << out;
  EXPECT_GE(json_number(out, "gzip", "per_format"), 24u) << "the mount's gzip: " << out;
  // A policy taken away: files made from then on use the mount's options.
  ASSERT_EQ(run({QZFS_BINARY, "set", "compression=inherit", (mnt_ / "plain").string()}, &out), 0) << out;
  unmount();

  EXPECT_EQ(record_size_of(backing_ / "small" / "sub" / "f"), 1u << 20);
  EXPECT_EQ(record_size_of(backing_ / "fast" / "f"), 128u << 10);
  EXPECT_EQ(record_size_of(backing_ / "plain" / "f"), 128u << 10);
  const auto stored = [&](const char* rel) { return fs::file_size(backing_ / rel); };
  EXPECT_LT(stored("small/sub/f") * 10, stored("fast/f") * 9)
      << "zstd-19 in 1 MiB records must store the same text in much less than zstd-1 in 128 KiB ones";
  EXPECT_LT(stored("fast/f") * 2, text.size());
  // The backing directory keeps the policy; pack uses the nearest one of a file and its
  // directories (a plain file dropped into small/sub is packed with zstd-19 and 1 MiB records).
  ASSERT_EQ(run({QZFS_BINARY, "get", (backing_ / "small" / "sub").string()}, &out), 0);
  EXPECT_TRUE(contains(out, "compression=zstd-19 recordsize=1M")) << out;
  put(backing_ / "small" / "sub" / "dropped", text);
  put(backing_ / "plain" / "dropped", text);
  ASSERT_EQ(run({QZFS_BINARY, "pack", backing_.string()}, &out), 0) << out;
  EXPECT_TRUE(contains(out, "by their own or their directory's policy")) << out;
  EXPECT_EQ(record_size_of(backing_ / "small" / "sub" / "dropped"), 1u << 20);
  EXPECT_EQ(record_size_of(backing_ / "plain" / "dropped"), 128u << 10);
  EXPECT_LT(stored("small/sub/dropped") * 10, stored("plain/dropped") * 9) << "zstd-19 against pack's gzip-1";
  mount("commit=1,allow_other");
  EXPECT_EQ(qzfs::test::read_file((mnt_ / "small" / "sub" / "dropped").string()), text);
  EXPECT_EQ(qzfs::test::read_file((mnt_ / "small" / "sub" / "f").string()), text);
  unmount();
}

}  // namespace
