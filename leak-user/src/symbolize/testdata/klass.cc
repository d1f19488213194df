#include <cstdio>
#include <unistd.h>
namespace ns {
struct Klass {
	int v;
	__attribute__((noipa)) int method(int x);
};
int Klass::method(int x) { return v * x + 1; }
} // namespace ns
int main(int argc, char **)
{
	ns::Klass k{argc};
	std::printf("method=%p result=%d\n", (void *)(&ns::Klass::method), k.method(argc));
	std::fflush(stdout);
	for (;;)
		pause();
}
