import sys
def leb(b,i):
    r=s=0
    while True:
        x=b[i]; i+=1; r|=(x&0x7f)<<s; s+=7
        if x<0x80: return r,i
for f in sys.argv[1:]:
    b=open(f,'rb').read(); i=8; names=[]
    while i<len(b):
        sid=b[i]; i+=1; n,i=leb(b,i); end=i+n
        if sid==7:
            c,i=leb(b,i)
            for _ in range(c):
                l,i=leb(b,i); nm=b[i:i+l].decode(); i+=l; k=b[i]; i+=1; _,i=leb(b,i); names.append(nm)
        i=end
    print(f, len(names), ' '.join(sorted(names)))
